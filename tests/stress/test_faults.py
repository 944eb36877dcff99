"""Resource faults: a full disk, a read-only data folder, a keyring that stops answering, a clock
that jumps. Each gets a plain error, and nothing stored before is lost."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from app.demo.studies import Patient
from app.errors import NotAuthenticated, VaultLocked
from app.vault import Vault
from tests.conftest import ADMIN_PASSWORD, Cli, CliUsers, VaultEnv, make_cli_users, write_study
from tests.security.test_keys import MemoryKeyring


def _mount_tmpfs(where: Path, megabytes: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs", str(where)],
                   check=True, capture_output=True)


def _remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB file system of its own for the vault (root only: tests run as root in CI)."""
    where = tmp_path / "disk"
    try:
        _mount_tmpfs(where, 48)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("mounting a small file system needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def cli_on_disk(cli: Cli, small_disk: Path) -> Cli:
    return Cli(small_disk / "home", cli.env)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def _with_a_study(cli: Cli, folder: Path, patient: Patient, slices: int, size: int) -> CliUsers:
    """The technologist logged in, one study imported: what the fault must not lose."""
    users = make_cli_users(cli)
    assert users.login("tech").returncode == 0
    write_study(folder, patient, slices=slices, size=size)
    assert cli.json("import", str(folder))["imported"] == slices
    return users


def test_a_full_disk_stops_the_import_plainly_and_loses_nothing(cli_on_disk: Cli, small_disk: Path,
                                                                tmp_path: Path) -> None:
    cli = cli_on_disk
    users = _with_a_study(cli, tmp_path / "first", Patient("PID-DISK1", "Before^Full"), 40, 256)
    write_study(tmp_path / "big", Patient("PID-DISK2", "Too^Big"), slices=400, size=256)  # ~52 MB
    result = cli("import", str(tmp_path / "big"))
    assert result.returncode == 1, result.stderr
    _no_traceback(result)
    assert "disk" in result.stderr and "full" in result.stderr, result.stderr
    verify = cli.json("verify")
    assert verify["damaged"] == [] and verify["ok"] == verify["instances"] >= 40
    studies = {s["patient_id"]: s["instances"] for s in cli.json("studies")}
    assert studies["PID-DISK1"] == 40
    # Space comes back (a bigger disk): the same import completes, nothing twice, nothing missing.
    _remount(small_disk, "size=160m")
    again = cli.json("import", str(tmp_path / "big"))
    assert again["rejected"] == [] and again["imported"] + again["duplicates"] == 400
    assert {s["patient_id"]: s["instances"] for s in cli.json("studies")} == {"PID-DISK1": 40,
                                                                             "PID-DISK2": 400}
    assert users.login("admin").returncode == 0
    assert cli.json("audit", "verify")["ok"] is True
    assert cli.json("verify")["damaged"] == []


def test_a_read_only_data_folder_is_refused_plainly(cli_on_disk: Cli, small_disk: Path,
                                                    tmp_path: Path) -> None:
    cli = cli_on_disk
    _with_a_study(cli, tmp_path / "ct", Patient("PID-RO", "Read^Only"), 5, 64)
    _remount(small_disk, "ro")
    try:
        for args in (("studies",), ("import", str(tmp_path / "ct"))):
            result = cli(*args)
            assert result.returncode != 0
            _no_traceback(result)
            assert "read-only" in result.stderr, result.stderr
    finally:
        _remount(small_disk, "rw")
    assert [s["instances"] for s in cli.json("studies")] == [5]
    assert cli.json("verify")["damaged"] == []


def test_a_keyring_that_stops_answering_locks_the_vault_until_it_is_back(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    store = MemoryKeyring()
    keyring.set_keyring(store)
    try:
        vault, _ = Vault.create(tmp_path / "home", admin="admin", password=ADMIN_PASSWORD, passphrase=None)
        vault.close()
        keyring.set_keyring(keyring.backends.fail.Keyring())  # the desktop's secret service is gone
        with pytest.raises(VaultLocked, match="keyring refused"):
            Vault.open(tmp_path / "home", lambda: "a passphrase is no way around it")
        keyring.set_keyring(store)
        Vault.open(tmp_path / "home", lambda: None).close()
    finally:
        keyring.set_keyring(previous)


class _Clock:
    """The wall clock, moved by ``offset`` seconds (an administrator or NTP setting it)."""

    def __init__(self) -> None:
        self._real = time.time
        self.offset = 0.0

    def time(self) -> float:
        return self._real() + self.offset


def test_clock_jumps_end_sessions_instead_of_extending_them(env: VaultEnv,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(time, "time", clock.time)
    rad = env.login("rad")
    env.vault.accounts.whoami(rad)
    clock.offset = -3600  # set back an hour: the idle time must not go negative and keep it open
    with pytest.raises(NotAuthenticated, match="clock"):
        env.vault.accounts.whoami(rad)
    clock.offset = 0
    rad = env.login("rad", fresh=True)
    clock.offset = 13 * 3600  # forward past the absolute limit
    with pytest.raises(NotAuthenticated):
        env.vault.accounts.whoami(rad)
    clock.offset = 0
    assert env.vault.trail.verify(env.login("admin", fresh=True)).ok  # times out of order, chain intact
