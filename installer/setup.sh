#!/usr/bin/env bash
# Sets up Custodian in ./.venv (idempotent). As root on Debian/Ubuntu it also installs the
# system packages the test suite uses as real peers (DCMTK, Orthanc, rsyslog-gnutls, 7-Zip,
# xorriso, OpenJPH for HTJ2K test images, Xvfb with Mesa, jing for the DICOM audit message schema,
# SoftHSM2 as the service's key token, shellcheck for the package's maintainer scripts) and the
# libraries Qt needs to run offscreen. There the venv is made from Debian's python3, so that the
# OS accounts the service tests create can run it.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
    dcmtk orthanc rsyslog-gnutls p7zip-full xorriso openjph-tools xvfb libgl1-mesa-dri libegl1 libxkbcommon0
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libfontconfig1
    libdbus-1-3 fonts-dejavu-core jing dicom3tools softhsm2 python3-venv shellcheck
    slapd ldap-utils freeradius
    orthanc-dicomweb nginx-light
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing system packages: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Orthanc is started by the tests on their own ports; the packaged service is not needed.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now orthanc >/dev/null 2>&1 || true; fi
    # So is slapd: the tests start their own with TLS and a test tree.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now slapd >/dev/null 2>&1 || true; fi
    # And FreeRADIUS: the tests start their own with a generated client and users.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now freeradius >/dev/null 2>&1 || true; fi
fi

PYTHON=${PYTHON:-python3}
if [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PYTHON=/usr/bin/python3
fi
# The service tests run the program as other OS accounts: a venv whose interpreter they cannot
# reach (a Python under /root) is made again.
if [ -x .venv/bin/python ] && [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 &&
   ! setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$(readlink -f .venv/bin/python)"; then
    echo "setup: .venv's Python cannot be run by other accounts; making it again from $PYTHON" >&2
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Every Python package (pip and the build backend too) at the version and with the hashes pinned in
# requirements.lock, so two installs are the same install and a tampered download is refused; then
# Custodian itself from this folder, built by the pinned setuptools (no build isolation, which would
# fetch an unpinned one); pip check refuses a lock that fell behind pyproject.toml. README
# "Installs" says how to renew the lock and how to check it for published vulnerabilities.
stamp=.venv/.custodian-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
    echo "setup: installing Custodian and its Python packages (requirements.lock) into .venv" >&2
    if ! { .venv/bin/python -m pip install --require-hashes -r requirements.lock &&
           .venv/bin/python -m pip install --no-deps --no-build-isolation -e . &&
           .venv/bin/python -m pip check; } >.venv/pip.log 2>&1; then
        tail -n 30 .venv/pip.log >&2
        echo "setup: pip failed; the full log is in .venv/pip.log" >&2
        exit 1
    fi
    touch "$stamp"
fi
