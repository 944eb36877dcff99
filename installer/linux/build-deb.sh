#!/usr/bin/env bash
# Packs the PyInstaller build (dist/custodian/) as a Debian package with dpkg-deb:
#   installer/linux/build-deb.sh [DIST_DIR] [OUT_DIR]
# Layout: /opt/custodian/ (the program), /usr/bin/custodian, a desktop entry, and /etc/custodian/
# where IT installs the signed site policy and the site's public key (root-owned: users cannot
# change or remove them). Service mode: the unit custodian.service, the maintainer scripts that
# make its account and group (installer/linux/debian/), and README-service.txt with the steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
dist=${1:-dist/custodian}
out=${2:-dist}
version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
[ -x "$dist/custodian" ] || { echo "build-deb: no built program in $dist (run pyinstaller build.spec)" >&2; exit 1; }

# The package's directories (/lib, /usr/share/doc, ...) are made with the default mode: keep them
# 0755 whatever umask the caller has.
umask 022
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -d -m 0755 "$stage/DEBIAN" "$stage/opt" "$stage/usr/bin" "$stage/usr/share/applications" \
    "$stage/etc/custodian" "$stage/lib/systemd/system" "$stage/usr/share/doc/custodian"
cp -a "$dist" "$stage/opt/custodian"
ln -s /opt/custodian/custodian "$stage/usr/bin/custodian"
install -m 0644 installer/linux/custodian.desktop "$stage/usr/share/applications/custodian.desktop"
install -m 0644 installer/linux/site-policy-README.txt "$stage/etc/custodian/README.txt"
install -m 0644 installer/linux/custodian.service "$stage/lib/systemd/system/custodian.service"
install -m 0644 installer/linux/README-service.txt "$stage/usr/share/doc/custodian/README-service.txt"
install -m 0755 installer/linux/debian/postinst installer/linux/debian/prerm installer/linux/debian/postrm \
    "$stage/DEBIAN/"
installed=$(du -sk "$stage/opt" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: custodian
Version: $version
Architecture: $(dpkg --print-architecture)
Maintainer: Custodian <support@custodian.invalid>
Installed-Size: $installed
Depends: passwd, libc6, libgl1, libegl1, libxkbcommon0, libxkbcommon-x11-0, libfontconfig1, libdbus-1-3, libxcb-cursor0
Section: science
Priority: optional
Description: Diagnostic DICOM workstation with an encrypted cache
 Reads, receives, sends and exports DICOM studies with an encrypted local cache, MFA sessions
 and a tamper-evident audit trail. Run 'custodian selftest' after installing. For the
 workstation service (custodian.service) see /usr/share/doc/custodian/README-service.txt.
CONTROL
mkdir -p "$out"
# zstd: quick to pack in CI, and read by every current dpkg (Debian 12, Ubuntu 22.04 on)
dpkg-deb --root-owner-group -Zzstd -z3 --build "$stage" "$out/custodian_${version}_$(dpkg --print-architecture).deb" >/dev/null
echo "$out/custodian_${version}_$(dpkg --print-architecture).deb"
