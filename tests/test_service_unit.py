"""Service mode as the packages deploy it: the systemd unit runs `custodian service` as its own
account with the socket where the group can reach it, the maintainer scripts make that account
(and start the service only once a vault exists), and the .deb carries all of it. None of this needs
the PyInstaller build: the package is packed around a stand-in program."""

from __future__ import annotations

import configparser
import itertools
import os
import plistlib
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINUX = REPO / "installer" / "linux"
UNIT = LINUX / "custodian.service"
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
SHELL_SCRIPTS = [LINUX / "debian" / name for name in MAINTAINER_SCRIPTS] + [
    LINUX / "build-deb.sh", REPO / "installer" / "macos" / "build-pkg.sh",
    REPO / "installer" / "macos" / "scripts" / "postinstall"]
HOME, SOCKET, GROUP = "/var/lib/custodian", "/run/custodian/custodian.sock", "custodian-users"


def _unit(text: str) -> configparser.ConfigParser:
    # strict: a key given twice is an error here, so no setting hides behind a later one.
    unit = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(text)
    return unit


def _yes(value: str) -> bool:
    return value.lower() in {"yes", "true", "on", "1"}


def _options(argv: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--")}


def test_the_unit_runs_the_service_as_its_account_behind_the_group() -> None:
    unit = _unit(UNIT.read_text())
    service = unit["Service"]
    assert (service["User"], service["Group"]) == ("custodian", "custodian")
    assert service["SupplementaryGroups"] == GROUP
    argv = shlex.split(service["ExecStart"])
    assert argv[:2] == ["/usr/bin/custodian", "service"]
    assert _options(argv) == {"--home": HOME, "--socket": SOCKET, "--group": GROUP}
    # The home is the state directory (0700) and the socket sits in the runtime directory, which is
    # handed to the group before the service starts: 0750 custodian:custodian-users.
    assert f"/var/lib/{service['StateDirectory']}" == HOME and service["StateDirectoryMode"] == "0700"
    assert f"/run/{service['RuntimeDirectory']}" == str(Path(SOCKET).parent)
    assert service["RuntimeDirectoryMode"] == "0750"
    assert shlex.split(service["ExecStartPre"])[1:] == [GROUP, str(Path(SOCKET).parent)]
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_unit_is_hardened_and_still_reaches_the_tpm() -> None:
    service = _unit(UNIT.read_text())["Service"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "RestrictSUIDSGID"):
        assert _yes(service[key]), key
    assert service["ProtectSystem"] == "strict"
    assert not _yes(service["PrivateDevices"]) and service["DevicePolicy"] == "closed"
    assert service["DeviceAllow"].split()[0] == "/dev/tpmrm0"
    assert service["LimitCORE"] == "0" and service["UMask"] == "0077"
    assert service["CapabilityBoundingSet"] == ""
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(service["RestrictAddressFamilies"].split())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify also checks that ExecStart's program exists: a stand-in takes /usr/bin/custodian's place.
    program = tmp_path / "custodian"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "custodian.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/custodian ", f"{program} "))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    # An unknown key or a bad value is only a warning (exit 0): any line about this unit fails.
    about_unit = [line for line in (done.stdout + done.stderr).splitlines() if "custodian" in line]
    assert done.returncode == 0 and about_unit == [], done.stdout + done.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_scripts_parse(script: Path) -> None:
    shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
    done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_scripts_pass_shellcheck() -> None:
    done = subprocess.run(["shellcheck", *map(str, SHELL_SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def check_deb_service_files(deb: Path, work: Path) -> None:
    """The .deb carries the unit, the maintainer scripts (executable) and the deployment notes, as
    they are in installer/linux; shared with the packaged build's test in test_build.py."""
    depends = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends"], capture_output=True, text=True,
                             check=True).stdout
    assert "passwd" in [d.strip() for d in depends.split(",")]  # useradd, groupadd for postinst
    control, files = work / "control", work / "files"
    work.mkdir(parents=True, exist_ok=True)  # dpkg-deb --control makes only the last folder
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(files)], check=True)
    for name in MAINTAINER_SCRIPTS:
        assert (control / name).read_bytes() == (LINUX / "debian" / name).read_bytes(), name
        assert (control / name).stat().st_mode & 0o777 == 0o755, name
    unit = files / "lib/systemd/system/custodian.service"
    assert unit.read_bytes() == UNIT.read_bytes() and unit.stat().st_mode & 0o777 == 0o644
    notes = (files / "usr/share/doc/custodian/README-service.txt").read_text()
    assert f"CUSTODIAN_SOCKET={SOCKET}" in notes and f"--groups {GROUP}" in notes
    assert "init --service" in notes
    assert "--pkcs11 /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so" in notes


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_the_deb_carries_the_service(tmp_path: Path) -> None:
    dist = tmp_path / "dist" / "custodian"
    dist.mkdir(parents=True)
    (dist / "custodian").write_text("#!/bin/sh\necho stand-in\n")
    (dist / "custodian").chmod(0o755)
    made = subprocess.run([str(LINUX / "build-deb.sh"), str(dist), str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    check_deb_service_files(Path(made.stdout.strip()), tmp_path)


# The maintainer scripts run for real, as root, inside a private mount namespace: /etc is a copy,
# /var/lib and /run are empty, and systemctl is a stand-in that writes down what it was asked. The
# marker check stops the script before anything runs if the copy is not what /etc shows.
POSTINST_RUN = r"""
set -eu
mount --bind "$W/etc" /etc
mount --bind "$W/varlib" /var/lib
mount -t tmpfs tmpfs /run
[ -e /etc/.custodian-test-copy ] || exit 99
mkdir -p /run/systemd/system
export PATH="$W/bin:/usr/sbin:/usr/bin:/sbin:/bin"
step() { echo "== $1" >>"$W/systemctl.log"; }
step fresh;   sh "$S/postinst" configure 2>"$W/fresh.err"
step again;   sh "$S/postinst" configure 2>"$W/again.err"
getent passwd custodian >"$W/passwd"; getent group custodian-users >"$W/group"
stat -c '%a %U %G' /var/lib/custodian >"$W/home"
echo '{}' >/var/lib/custodian/keystore.json
step vault;   sh "$S/postinst" configure 2>"$W/vault.err"
step remove;  sh "$S/prerm" remove; sh "$S/postrm" remove
step purge;   sh "$S/postrm" purge 2>"$W/purge.err"
{ getent passwd custodian || echo "no account"; getent group custodian-users || echo "no group"; } >"$W/after"
stat -c '%U' /var/lib/custodian/keystore.json >>"$W/after"
"""


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("useradd") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and mount namespaces (unshare)")
def test_the_maintainer_scripts_make_the_account_and_keep_the_vault(tmp_path: Path) -> None:
    work = tmp_path
    subprocess.run(["cp", "-a", "/etc", str(work / "etc")], check=True)
    (work / "etc" / ".custodian-test-copy").touch()
    (work / "varlib").mkdir()
    (work / "bin").mkdir()
    (work / "bin" / "systemctl").write_text(f'#!/bin/sh\necho "$*" >>{work}/systemctl.log\n')
    (work / "bin" / "systemctl").chmod(0o755)
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", POSTINST_RUN],
                              env={**os.environ, "W": str(work), "S": str(LINUX / "debian")},
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(work / "etc")  # the copy holds /etc/shadow
    assert done.returncode == 0, done.stdout + done.stderr
    account = (work / "passwd").read_text().strip().split(":")
    assert account[0] == "custodian" and account[5:] == [HOME, "/usr/sbin/nologin"]
    assert (work / "group").read_text().startswith(f"{GROUP}:")
    assert (work / "home").read_text().split() == ["700", "custodian", "custodian"]
    # Without a vault the service is neither enabled nor started, and the administrator is told how.
    log = (work / "systemctl.log").read_text().split("== ")
    steps = {chunk.split("\n", 1)[0]: chunk.split("\n", 1)[1] for chunk in log if chunk}
    assert "enable" not in steps["fresh"] and "restart" not in steps["fresh"]
    assert "init --service" in (work / "fresh.err").read_text()
    assert (work / "again.err").read_text() == (work / "fresh.err").read_text()  # idempotent
    assert "enable custodian.service" in steps["vault"] and "restart custodian.service" in steps["vault"]
    assert "stop custodian.service" in steps["remove"]
    # Purge removes the account and the group but not the vault, now root's, and says so.
    assert (work / "after").read_text().split("\n")[:3] == ["no account", "no group", "root"]
    assert "left in place" in (work / "purge.err").read_text()
    assert not (Path("/etc/.custodian-test-copy")).exists()


def test_the_macos_jobs_match_the_linux_layout() -> None:
    macos = REPO / "installer" / "macos"
    job = plistlib.loads((macos / "org.custodian.service.plist").read_bytes())
    argv = job["ProgramArguments"]
    assert argv[1] == "service" and _options(argv) == {
        "--home": "/Library/Application Support/Custodian/Service",
        "--socket": "/var/run/custodian/custodian.sock", "--group": GROUP}
    assert job["UserName"] == "_custodian" and job["Umask"] == 0o077 and job["Disabled"] is True
    rundir = plistlib.loads((macos / "org.custodian.rundir.plist").read_bytes())
    assert rundir["ProgramArguments"][-1] == "/var/run/custodian" and GROUP in rundir["ProgramArguments"]
    assert "org.custodian.service.plist" in (macos / "build-pkg.sh").read_text()
