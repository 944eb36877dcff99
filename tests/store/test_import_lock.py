"""An import reads, parses and seals outside the vault's write lock and takes it per batch only
(issue 22, item 4): a stalled source holds up no other writer, concurrent imports of the same files
store each instance once, and the sweep leaves a live import's staged blobs alone.

A stalled USB stick or network mount cannot be made on demand, so its read is replaced by one
that waits (the only stand-in here); the other writer is a real ``custodian scp`` process that a
pynetdicom modality stores into, or a second import.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.demo.studies import Patient, ct_study
from app.net.nodes import Node
from app.security.roles import Role
from app.store.blobs import quarantine_aad, unseal
from app.store.core import QUARANTINE_CONTEXT
from app.store.importer import read_source
from app.store.limits import IntakeLimits
from app.store.records import ImportReport
from app.store.sources import Source
from app.store.staging import JOURNAL, LEASE, STAGING_DIR
from app.store.verdicts import SAME_UID
from app.vault import intake
from tests.conftest import PASSPHRASE, REPO, VaultEnv, make_env, study_bytes, write_study
from tests.peers.ports import free_port, stop_gracefully, wait_listening
from tests.peers.sender import echoed, send

MODALITY = "STALLMOD"


@dataclass
class Site:
    env: VaultEnv
    port: int  # where a real ``custodian scp`` of the same vault listens

    def instances(self) -> list[str]:
        return [r[0] for r in self.env.vault._core.query("SELECT sop_uid FROM instances")]

    def import_in_background(self, *folders: Path) -> Future[ImportReport]:
        session = self.env.login("tech")
        pool = ThreadPoolExecutor(1)
        future = pool.submit(self.env.vault.intake.import_paths, session, list(folders))
        pool.shutdown(wait=False)
        return future

    def check_clean(self) -> None:
        """Every indexed instance decrypts and matches; no blob without a row; nothing staged (a
        running SCP's journal is empty: all it answered is indexed)."""
        assert self.env.vault.admin.verify(self.env.login("admin")).damaged == []
        home = self.env.home
        blobs = sum(1 for p in (home / "blobs").rglob("*") if p.is_file())
        (quarantined,) = self.env.vault._core.query("SELECT count(*) FROM quarantine")[0]
        assert blobs == len(self.instances()) + quarantined
        assert [p for p in (home / STAGING_DIR).rglob("*") if p.is_file() and p.suffix != LEASE
                and not (p.name == JOURNAL and p.stat().st_size == 0)] == []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("lock") / "home"
    env = make_env(home)
    env.add("tech", Role.TECHNOLOGIST)
    env.vault.nodes.add(env.login("admin"), Node("modality", MODALITY, "127.0.0.1", 104))
    port = free_port()
    log = home.parent / "scp.log"
    with log.open("wb") as out:
        scp = subprocess.Popen(
            [sys.executable, "-m", "app", "--home", str(home), "scp", "--port", str(port),
             "--host", "127.0.0.1"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")},
                 "CUSTODIAN_PASSPHRASE": PASSPHRASE})
    try:
        wait_listening(scp, port, log, "custodian scp", timeout=60, ready=lambda: echoed(port, MODALITY))
        yield Site(env, port)
    finally:
        stop_gracefully(scp)
        env.vault.close()


class Stall:
    """Reads that stop answering at the files given, as a stalled stick or mount does, until
    released (each waits at a barrier when one is given: two imports then meet there)."""

    def __init__(self, *paths: Path, barrier: threading.Barrier | None = None) -> None:
        self.paths, self.barrier = set(paths), barrier
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, source: Source, limits: IntakeLimits) -> bytes:
        if source.path in self.paths:
            self.reached.set()
            if self.barrier is not None:
                self.barrier.wait(30)
            else:
                self.release.wait(60)
        return read_source(source, limits)


def _staged(home: Path) -> set[str]:
    return {p.name for p in (home / STAGING_DIR).glob("*/*")}


def test_a_stalled_source_holds_up_neither_the_storage_scp_nor_another_import(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_study(tmp_path / "stick", Patient("PID-STALL", "Stalled^Stick"), slices=12, size=32)
    os.mkfifo(tmp_path / "stick" / "pipe")  # nobody writes to it: a read would wait forever
    stall = Stall(files[-1])
    monkeypatch.setattr(intake, "read_source", stall)
    importing = site.import_in_background(tmp_path / "stick")
    try:
        assert stall.reached.wait(30)
        received = ct_study(Patient("PID-SCP", "Received^Rita"), slices=2, size=32)
        clock = time.perf_counter()
        sent = send(site.port, received, calling=MODALITY)
        took = time.perf_counter() - clock
        assert sent.statuses == [0, 0] and took < 10, (sent, took)  # the SCP stored while the import waits
        assert {str(ds.SOPInstanceUID) for ds in received} <= set(site.instances())
        other = site.env.vault.intake.import_bytes(site.env.login("tech"),
                                                    study_bytes(Patient("PID-OTHER", "Other^Otto"), slices=2,
                                                                size=32))
        assert other.imported == 2
        assert not importing.done()  # all the while the first import was stalled on its source
    finally:
        stall.release.set()
    report = importing.result(60)
    assert report.imported == 12
    assert [r.reason for r in report.rejected] == ["not a regular file (a named pipe): skipped"]
    site.check_clean()


def test_the_sweep_leaves_the_staged_blobs_of_an_import_in_flight(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_study(tmp_path / "slow", Patient("PID-SLOW", "Slow^Sam"), slices=40, size=32)
    stall = Stall(files[-1])
    monkeypatch.setattr(intake, "read_source", stall)
    home = site.env.home
    importing = site.import_in_background(tmp_path / "slow")
    try:
        assert stall.reached.wait(30)
        deadline = time.monotonic() + 20
        while len(_staged(home)) < 32 and time.monotonic() < deadline:  # two lookups' worth, sealed
            time.sleep(0.01)
        staged = _staged(home)
        assert len(staged) >= 32
        # What a killed import left: its lease is free, so this folder must go.
        abandoned = home / STAGING_DIR / "0123456789abcdef"
        abandoned.mkdir()
        (abandoned / ("ab" + "0" * 30)).write_bytes(os.urandom(64))
        abandoned.with_name(abandoned.name + LEASE).touch()
        other = site.env.vault.intake.import_bytes(  # it sweeps as it starts
            site.env.login("tech"), study_bytes(Patient("PID-SWEPT", "Swept^Sue"), slices=2, size=32))
        assert other.imported == 2
        assert not abandoned.exists() and not abandoned.with_name(abandoned.name + LEASE).exists()
        assert staged <= _staged(home) and not importing.done()
    finally:
        stall.release.set()
    assert importing.result(60).imported == 40
    site.check_clean()


def test_two_imports_of_overlapping_files_at_once_store_each_instance_once(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_study(tmp_path / "a", Patient("PID-BOTH", "Both^Bea"), slices=30, size=32)
    (tmp_path / "b").mkdir()
    for path in first[:20]:
        shutil.copy(path, tmp_path / "b" / path.name)
    altered = bytearray(first[5].read_bytes())  # another object under the same SOP Instance UID
    altered[-1] ^= 0xFF
    (tmp_path / "b" / first[5].name).write_bytes(altered)
    extra = write_study(tmp_path / "b" / "y", Patient("PID-ONLY-B", "Only^Bert"), slices=5, size=32)
    # Each import has looked up and sealed its first sixteen files against an index without them
    # when both meet here: whichever commits second finds them stored meanwhile.
    stall = Stall(first[-1], extra[-1], barrier=threading.Barrier(2))
    monkeypatch.setattr(intake, "read_source", stall)
    before = len(site.instances())
    one, two = site.import_in_background(tmp_path / "a"), site.import_in_background(tmp_path / "b")
    reports = [one.result(60), two.result(60)]
    stored = site.instances()
    assert len(stored) == len(set(stored)) == before + 35
    assert sum(r.imported for r in reports) == 35 and sum(r.duplicates for r in reports) == 19
    assert [r.reason for report in reports for r in report.rejected] == [SAME_UID]
    # The loser was sealed again for the quarantine, under its key, as it was received.
    core = site.env.vault._core
    ((blob, digest),) = core.query("SELECT blob, sha256 FROM quarantine WHERE reason = ?", (SAME_UID,))
    kept = unseal(core.data_key(QUARANTINE_CONTEXT), core.blobs.read(blob), quarantine_aad(blob))
    assert hashlib.sha256(kept).hexdigest() == digest
    assert digest in {hashlib.sha256(first[5].read_bytes()).hexdigest(), hashlib.sha256(altered).hexdigest()}
    site.check_clean()


class Stopped(Exception):
    """What Ctrl-C (or a cancel button) raises out of the progress callback."""


def test_an_import_stopped_midway_keeps_whole_batches_and_leaves_nothing_staged(
        site: Site, tmp_path: Path) -> None:
    write_study(tmp_path / "long", Patient("PID-STOP", "Stopped^Stan"), slices=100, size=32)
    study = site.instances()

    def progress(done: int, total: int) -> None:
        if done == 90:
            raise Stopped

    with pytest.raises(Stopped):
        site.env.vault.intake.import_paths(site.env.login("tech"), [tmp_path / "long"], progress)
    assert len(site.instances()) - len(study) == 64  # the first batch; the rest was never indexed
    site.check_clean()
