"""Crash safety and concurrency: an import killed at any moment leaves a consistent vault."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.demo.studies import Patient
from app.store.vault import Vault
from tests.conftest import PASSPHRASE, REPO, CliUsers, write_study


def _start_import(cli_users: CliUsers, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app", "--home", str(cli_users.cli.home), "import",
                             str(folder)], env=cli_users.cli.env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _blob_files(home: Path) -> int:
    return sum(1 for p in (home / "blobs").rglob("*") if p.is_file()) if (home / "blobs").exists() else 0


def test_import_killed_at_random_moments(cli_users: CliUsers, tmp_path: Path) -> None:
    runs, slices = 6, 300
    folders = [tmp_path / f"in{i}" for i in range(runs)]
    for i, folder in enumerate(folders):
        write_study(folder, Patient(f"PID-K{i}", "Killed^Import"), slices=slices, size=128)
    assert cli_users.login("tech").returncode == 0
    watcher = Vault.open(cli_users.cli.home, lambda: PASSPHRASE)
    rng = random.Random(1234)
    seen = []
    for folder in folders:
        before = watcher._query("SELECT count(*) FROM instances")[0][0]
        proc = _start_import(cli_users, folder)
        # Kill once the import has visibly started, then a random moment later (often mid-batch).
        while proc.poll() is None and watcher._query("SELECT count(*) FROM instances")[0][0] == before:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        verify = cli_users.cli.json("verify")
        assert verify["damaged"] == [], verify
        seen.append(verify["instances"])
    watcher.close()
    assert any(n % slices for n in seen), seen  # at least one kill landed mid-import
    final = cli_users.cli.json("import", *map(str, folders))
    assert final["rejected"] == []
    assert final["imported"] + final["duplicates"] == runs * slices
    verify = cli_users.cli.json("verify")
    assert (verify["instances"], verify["ok"], verify["damaged"]) == (runs * slices, runs * slices, [])
    assert _blob_files(cli_users.cli.home) == runs * slices  # orphans of the killed runs were swept
    assert cli_users.login("admin").returncode == 0
    assert cli_users.cli.json("audit", "verify")["ok"] is True


def test_readers_keep_working_during_an_import(cli_users: CliUsers, tmp_path: Path) -> None:
    write_study(tmp_path / "first", Patient("PID-R", "Reader^Rita"), slices=10, size=64)
    write_study(tmp_path / "second", Patient("PID-S", "Second^Sam"), slices=200, size=128)
    assert cli_users.login("tech").returncode == 0
    assert cli_users.cli("import", str(tmp_path / "first")).returncode == 0
    vault = Vault.open(cli_users.cli.home, lambda: PASSPHRASE)
    session = vault.resume(vault.load_token())
    proc = _start_import(cli_users, tmp_path / "second")
    counts, reads = [], 0
    try:
        while proc.poll() is None:
            studies = vault.studies(session)
            counts.append(sum(s.instances for s in studies))
            first = next(s for s in studies if s.patient_id == "PID-R")
            images = vault.open_series(session, vault.series(session, first.study_uid)[0].series_uid)
            images.render(reads % len(images))
            reads += 1
    finally:
        proc.wait()
    assert proc.returncode == 0 and reads > 3
    assert counts == sorted(counts)  # readers see whole batches appear, never a step back
    assert sum(s.instances for s in vault.studies(session)) == 210
    vault.close()
