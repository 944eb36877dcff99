"""Concurrency: readers keep working while another process imports (kill -9 of an import at
random moments is in tests/stress/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.demo.studies import Patient
from app.vault import Vault
from tests.conftest import PASSPHRASE, REPO, CliUsers, write_study


def _start_import(cli_users: CliUsers, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app", "--home", str(cli_users.cli.home), "import",
                             str(folder)], env=cli_users.cli.env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_readers_keep_working_during_an_import(cli_users: CliUsers, tmp_path: Path) -> None:
    write_study(tmp_path / "first", Patient("PID-R", "Reader^Rita"), slices=10, size=64)
    write_study(tmp_path / "second", Patient("PID-S", "Second^Sam"), slices=200, size=128)
    assert cli_users.login("tech").returncode == 0
    assert cli_users.cli("import", str(tmp_path / "first")).returncode == 0
    vault = Vault.open(cli_users.cli.home, lambda: PASSPHRASE)
    session = vault.accounts.resume(vault.accounts.load_token())
    proc = _start_import(cli_users, tmp_path / "second")
    counts, reads = [], 0
    try:
        while proc.poll() is None:
            studies = vault.reading.studies(session)
            counts.append(sum(s.instances for s in studies))
            first = next(s for s in studies if s.patient_id == "PID-R")
            images = vault.reading.open_series(session,
                                               vault.reading.series(session, first.study_uid)[0].series_uid)
            images.render(reads % len(images))
            reads += 1
    finally:
        proc.wait()
    assert proc.returncode == 0 and reads > 3
    assert counts == sorted(counts)  # readers see whole batches appear, never a step back
    assert sum(s.instances for s in vault.reading.studies(session)) == 210
    vault.close()
