"""``custodian selftest``: passes on this machine, and each kind of check can fail with a plain reason."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import aead

from app import selftest
from app.security.process import Swap, encrypted_block, swap_areas
from app.selftest import FAIL, PASS, memory_checks
from tests.conftest import REPO, Cli, CliUsers


def _checks(result: dict) -> dict[str, dict]:
    return {check["name"]: check for check in result["checks"]}


def test_a_fresh_machine_passes_and_says_there_is_no_vault_yet(cli: Cli) -> None:
    run = cli("--json", "selftest")
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    checks = _checks(result)
    assert result["ok"]
    crypto = [c for c in result["checks"] if c["group"] == "crypto"]
    assert len(crypto) == 6 and all(c["result"] == "pass" for c in crypto)
    for name in ("JPEG-LS lossless", "JPEG 2000 lossless", "RLE", "JPEG baseline", "HTJ2K", "Qt", "VTK"):
        assert checks[name]["result"] == "pass", checks[name]
    assert checks["vault"]["result"] == "skip" and "no vault" in checks["vault"]["detail"]


def test_vault_clock_and_network(cli_users: CliUsers) -> None:
    cli = cli_users.cli
    result = cli.json("selftest")
    checks = _checks(result)
    assert result["ok"]
    assert checks["key protection"]["detail"].startswith("passphrase-wrapped")
    assert checks["index integrity"]["result"] == "pass" and checks["clock"]["result"] == "pass"
    assert checks["PACS"]["result"] == "skip" and checks["audit repository"]["result"] == "skip"

    # A PACS that does not answer fails the self-test with the reason; --offline leaves it out.
    assert cli("node", "add", "pacs", "--aet", "NOBODY", "--host", "127.0.0.1",
               "--port", "9").returncode == 0  # the discard port: nothing listens there
    run = cli("selftest")
    assert run.returncode == 1
    assert "FAIL  network  PACS" in run.stdout and "connection refused" in run.stdout.lower()
    assert cli("selftest", "--offline").returncode == 0


def test_a_damaged_index_page_fails_the_integrity_check(cli_users: CliUsers) -> None:
    index = cli_users.cli.home / "index.db"
    data = bytearray(index.read_bytes())
    page = 16384
    assert len(data) >= 3 * page
    last = len(data) // page - 1
    data[last * page + 200: last * page + 216] = bytes(16)  # a stray write inside the last page
    index.write_bytes(bytes(data))
    result = cli_users.cli.json("selftest", "--offline")
    check = _checks(result)["index integrity"]
    assert not result["ok"] and check["result"] == "fail" and "restore from a backup" in check["detail"]


def test_a_wrong_primitive_fails_its_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    real = aead.AESGCM

    class Broken:  # a substituted cipher that gets one bit wrong
        def __init__(self, key: bytes) -> None:
            self._cipher = real(key)

        def encrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
            out = bytearray(self._cipher.encrypt(nonce, data, associated))
            out[0] ^= 1
            return bytes(out)

    monkeypatch.setattr(aead, "AESGCM", Broken)
    checks = {c.name: c for c in selftest.crypto_checks()}
    aes = checks["AES-256-GCM (GCM spec test case 14)"]
    assert aes.result == selftest.FAIL and "wrong answer" in aes.detail
    assert checks["SHA-256 (FIPS 180-4 'abc')"].result == selftest.PASS


def test_the_clock_must_not_be_behind_the_audit_trail() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert selftest.clock_check(now - timedelta(minutes=1), now).result == selftest.PASS
    behind = selftest.clock_check(now + timedelta(hours=2), now)
    assert behind.result == selftest.FAIL and "120 minute(s) behind" in behind.detail
    assert selftest.clock_check(None, datetime(2001, 1, 1, tzinfo=UTC)).result == selftest.FAIL


def test_report_counts_failures_and_skips() -> None:
    checks = [selftest.Check("crypto", "a", selftest.PASS),
              selftest.Check("vault", "b", selftest.SKIP, "why"),
              selftest.Check("network", "c", selftest.FAIL, "down")]
    text = selftest.report(checks)
    assert "FAIL  network  c — down" in text and text.endswith("3 checks: 1 failed, 1 skipped.")


def test_the_process_cannot_dump_core_or_be_read_by_another() -> None:
    code = ("from app.security import process; assert not process.hardened(); process.harden(); "
            "assert process.hardened(); print('hardened')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "hardened", result.stderr


def test_unencrypted_swap_fails_and_encrypted_or_none_passes(tmp_path: Path) -> None:
    # A fake sysfs: dm-1 (LVM) stacked on dm-0 (dm-crypt), and a plain disk partition.
    crypt, lvm, disk = tmp_path / "dm-0", tmp_path / "dm-1", tmp_path / "sda2"
    for block, uuid in ((crypt, "CRYPT-LUKS2-abc-swap"), (lvm, "LVM-xyz")):
        (block / "dm").mkdir(parents=True)
        (block / "dm" / "uuid").write_text(uuid)
    (lvm / "slaves").mkdir()
    (lvm / "slaves" / "dm-0").symlink_to(crypt)
    disk.mkdir()
    assert encrypted_block(crypt) and encrypted_block(lvm) and not encrypted_block(disk)
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename Type Size Used Priority\n/dev/zram0 partition 1 0 100\n"
                     "/nonexistent/swapfile file 1 0 -2\n")
    assert swap_areas(swaps) == [Swap("/dev/zram0", True), Swap("/nonexistent/swapfile", False)]
    checks = {c.name: c for c in memory_checks([Swap("/dev/sda2", False), Swap("/dev/dm-1", True)])}
    assert checks["swap"].result == FAIL and "/dev/sda2" in checks["swap"].detail
    assert memory_checks([Swap("/dev/dm-1", True)])[1].result == PASS
    assert memory_checks([])[1].detail == "none"
