"""kill -9 at random moments: the importer, the storage SCP and the exporter, each a real
``custodian`` process, and what must hold afterwards.

After every kill the vault is checked the way ``custodian verify`` and ``custodian audit verify``
check it (the same vault calls, from this process), and:

- import: whatever was indexed is intact; orphan blobs of the killed run are swept later;
- storage SCP: every instance the SCP answered with Success is in the vault (a sender deletes
  what was acknowledged, so a lost one is lost for good);
- export: the media folder holds either nothing or the whole media, which is then accounted
  for as a disclosure with the file's SHA-256; no disclosure without media; nothing is left
  in the killed process's temporary directory.

The CI subset (tests/stress/test_kills.py) and the long runner (tests/stress/run.py) share this.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from app.demo.studies import Patient, ct_study
from app.media.disclosures import Disclosure
from app.net.nodes import Node
from app.security.roles import Role
from app.vault import Vault
from tests.conftest import PASSPHRASE, REPO, VaultEnv, make_env, write_study
from tests.peers.ports import free_port, wait_listening
from tests.peers.sender import echoed

SENDER_AE = "KILLSENDER"
LIBRARIANS = 8  # each export needs a fresh authenticator step: eight people keep the runner moving


@dataclass
class Tally:
    """One row of the results: kills tried and what was found afterwards."""

    what: str
    kills: int = 0
    finished: int = 0  # processes that had ended by their kill's moment (checked all the same)
    mid_work: int | None = 0  # kills after some work was durable and before all of it was
    acknowledged: int = 0  # instances stored (import) or confirmed (SCP), media made (export)
    lost: int = 0  # acknowledged but missing, or indexed but damaged
    broken_chain: int = 0  # audit verify failures
    leftovers: int = 0  # half media, disclosures without media, files in the temp dir
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def found(self, problem: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(problem)


class Station:
    """A vault at a CLI home: checks and logins from this process, the victims as subprocesses."""

    def __init__(self, home: Path) -> None:
        self.env: VaultEnv = make_env(home)
        self.home = home
        self.process_env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
        self.process_env["CUSTODIAN_PASSPHRASE"] = PASSPHRASE
        self.env.add("tech", Role.TECHNOLOGIST)
        self.env.add("po", Role.PRIVACY_OFFICER)
        for n in range(LIBRARIANS):
            self.env.add(f"lib{n}", Role.LIBRARIAN)
        self._tokens: dict[str, str] = {}

    @property
    def vault(self) -> Vault:
        return self.env.vault

    def act_as(self, name: str) -> None:
        """Make ``name`` the CLI's logged-in user, as ``custodian login`` would."""
        if name not in self._tokens:
            account = self.env.accounts[name]
            self._tokens[name] = self.vault.accounts.login(name, account.password, account.codes.next())[0]
        self.vault.accounts.save_token(self._tokens[name])

    def start(self, *args: str, tmp: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
        extra = {"TMPDIR": str(tmp)} if tmp else {}
        quiet = subprocess.DEVNULL
        return subprocess.Popen([sys.executable, "-m", "app", "--home", str(self.home), *args],
                                cwd=REPO, env={**self.process_env, **extra, **env},
                                stdout=quiet, stderr=quiet, stdin=quiet)

    def recover(self) -> None:
        """What the next start of the storage SCP (or of an import) does first: import from its
        journal what a killed receiver acknowledged and had not indexed yet."""
        self.vault.intake.sweep_unindexed()

    def instances(self, study_uid: str | None = None) -> set[str]:
        if study_uid is None:
            return {r[0] for r in self.vault._core.query("SELECT sop_uid FROM instances")}
        return {r[0] for r in self.vault._core.query("SELECT sop_uid FROM instances WHERE study_uid = ?",
                                                (study_uid,))}

    def check(self, tally: Tally) -> None:
        """What ``custodian verify`` and ``custodian audit verify`` report."""
        admin = self.env.login("admin")
        report = self.vault.admin.verify(admin)
        if report.damaged:
            tally.lost += len(report.damaged)
            tally.found(f"verify: {len(report.damaged)} damaged")
        chain = self.vault.trail.verify(admin)
        if not chain.ok:
            tally.broken_chain += 1
            tally.found(f"audit verify: first bad record {chain.first_bad_seq}")

    def close(self) -> None:
        self.vault.close()


def _kill(process: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL after ``delay`` seconds; False when the process had finished by then."""
    try:
        process.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


# ---------------------------------------------------------------------------- the importer
def kill_imports(station: Station, work: Path, iterations: int, rng: random.Random,
                 slices: int = 300, size: int = 256) -> Tally:
    tally, started = Tally("importer (custodian import)"), time.perf_counter()
    station.act_as("tech")
    folders = []
    for i in range(iterations + 1):
        folder = work / f"import-{i}"
        write_study(folder, Patient(f"KILL-I{i}", "Killed^Import"), slices=slices, size=size)
        folders.append(folder)
    # Calibration: when an import indexes its first batch and its last. Most kills fall in
    # between (where a batch can be torn), the rest before or after.
    study_uid = _study_of(folders[0])
    clock, process = time.perf_counter(), station.start("import", str(folders[0]))
    marks = []
    while len(marks) < 2 and process.poll() is None:
        if len(station.instances(study_uid)) >= (1 if not marks else slices):
            marks.append(time.perf_counter() - clock)
        time.sleep(0.002)
    assert process.wait() == 0 and len(marks) == 2
    first, last = marks
    for folder in folders[1:]:
        study_uid = _study_of(folder)
        process = station.start("import", str(folder))
        if rng.random() < 0.75:  # once its first batch is in (start-up time varies with load)
            while not station.instances(study_uid) and process.poll() is None:
                time.sleep(0.002)
            delay = rng.uniform(0, last - first)
        else:
            delay = rng.uniform(0, first)
        if not _kill(process, delay):
            tally.finished += 1
        tally.kills += 1
        indexed = len(station.instances(study_uid))
        tally.acknowledged += indexed
        tally.mid_work += 0 < indexed < slices
        station.check(tally)
    # The interrupted imports run again to the end: everything arrives, no orphan blob is left.
    if station.start("import", *map(str, folders[1:])).wait() != 0:
        tally.found("the re-import of the interrupted folders failed")
    expected = (iterations + 1) * slices
    stored = station.instances()
    if len(stored) != expected:
        tally.lost += expected - len(stored)
        tally.found(f"after re-import {len(stored)} of {expected} instances")
    blobs = sum(1 for p in (station.home / "blobs").rglob("*") if p.is_file())
    if blobs != len(stored):
        tally.leftovers += abs(blobs - len(stored))
        tally.found(f"{blobs} blob files for {len(stored)} instances")
    station.check(tally)
    tally.seconds = time.perf_counter() - started
    return tally


def _study_of(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)


# ---------------------------------------------------------------------------- the storage SCP
class _Sender(threading.Thread):
    """A modality storing one instance at a time and keeping what the SCP acknowledged."""

    def __init__(self, port: int, datasets: list[Dataset]) -> None:
        super().__init__(daemon=True)
        self.port, self.datasets = port, datasets
        self.acknowledged: list[str] = []
        self.associated = threading.Event()
        self.first_stored = threading.Event()

    def run(self) -> None:
        ae = AE(ae_title=SENDER_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="CUSTODIAN")
        self.associated.set()
        try:
            for ds in self.datasets if assoc.is_established else ():
                status = assoc.send_c_store(ds)
                if not assoc.is_established or getattr(status, "Status", None) != 0x0000:
                    break
                self.acknowledged.append(str(ds.SOPInstanceUID))
                self.first_stored.set()
        finally:
            self.first_stored.set()
            if assoc.is_established:
                assoc.release()


def _start_scp(station: Station) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = station.start("scp", "--port", str(port), "--host", "127.0.0.1")

    wait_listening(process, port, Path(os.devnull), "custodian scp", timeout=60,
                   ready=lambda: echoed(port, SENDER_AE))
    return process, port


def _calibrated(station: Station, slices: int, tries: int = 3) -> float:
    """How long one whole send takes, so that the kills fall within one. A send that did not finish
    does not count: pynetdicom's requestor can lose a response that comes back while its reactor
    looks at the queue (it then waits out its DIMSE timeout), which would spread the kills past
    every send."""
    for i in range(tries):
        datasets = ct_study(Patient(f"KILL-C{i}", "Calibrating^Receiver"), slices=slices, size=256)
        process, port = _start_scp(station)
        sender = _Sender(port, datasets)
        clock = time.perf_counter()
        sender.start()
        sender.join()
        whole = time.perf_counter() - clock
        process.terminate()
        process.wait()
        if len(sender.acknowledged) == slices:
            return whole
    raise AssertionError(f"no whole send of {slices} instances in {tries} tries")


def kill_scps(station: Station, iterations: int, rng: random.Random, slices: int = 60) -> Tally:
    tally, started = Tally("storage SCP (custodian scp) receiving"), time.perf_counter()
    station.vault.nodes.add(station.env.login("admin"), Node("killsender", SENDER_AE, "127.0.0.1", 104))
    whole = _calibrated(station, slices)
    for i in range(1, iterations + 1):
        datasets = ct_study(Patient(f"KILL-S{i}", "Killed^Receiver"), slices=slices, size=256)
        process, port = _start_scp(station)
        sender = _Sender(port, datasets)
        sender.start()
        # Mostly once the first instance is stored (so a kill can fall between two), else as the
        # association starts.
        (sender.first_stored if rng.random() < 0.75 else sender.associated).wait(30)
        if not _kill(process, rng.uniform(0, whole)):
            tally.found(f"the SCP exited by itself before kill {i}")
        sender.join(60)
        tally.kills += 1
        acknowledged = set(sender.acknowledged)
        station.recover()
        stored = station.instances(str(datasets[0].StudyInstanceUID))
        tally.acknowledged += len(acknowledged)
        tally.mid_work += 0 < len(acknowledged) < slices
        missing = acknowledged - stored
        if missing:
            tally.lost += len(missing)
            tally.found(f"{len(missing)} acknowledged instances missing after kill {i}")
        station.check(tally)
    tally.seconds = time.perf_counter() - started
    return tally


# ---------------------------------------------------------------------------- the exporter
def kill_exports(station: Station, work: Path, iterations: int, rng: random.Random,
                 slices: int = 60) -> Tally:
    tally, started = Tally("exporter (custodian export, encrypted zip)"), time.perf_counter()
    tally.mid_work = None  # what it has done is not visible from outside until the media appears
    patient = Patient("KILL-E", "Killed^Export")
    station.act_as("tech")  # (a librarian imports outside media only)
    write_study(work / "to-export", patient, slices=slices, size=512)
    assert station.start("import", str(work / "to-export")).wait() == 0
    study_uid = _study_of(work / "to-export")
    appeared = whole = 0.0
    for i in range(iterations + 1):
        librarian = f"lib{i % LIBRARIANS}"
        station.act_as(librarian)
        folder, tmp = work / f"usb-{i}", work / f"tmp-{i}"
        folder.mkdir()
        tmp.mkdir()
        made_before = _made(station, patient)
        process = station.start(
            "export", study_uid, "--recipient", "Killed Export", "--recipient-type", "patient",
            "--purpose", "patient-request", "--identity-check", "photo-id",
            "--out", str(folder / "media.zip"),
            tmp=tmp, CUSTODIAN_TOTP=station.env.accounts[librarian].codes.next())
        if i == 0:  # calibration: when the media appears, and when the export ends
            clock = time.perf_counter()
            while not (folder / "media.zip").exists() and process.poll() is None:
                time.sleep(0.002)
            appeared = time.perf_counter() - clock
            assert process.wait() == 0
            whole = time.perf_counter() - clock
            continue
        tally.kills += 1
        delay = rng.uniform(0.6 * appeared, whole) if rng.random() < 0.75 else rng.uniform(0, whole)
        if not _kill(process, delay):
            tally.finished += 1
        made = _made(station, patient)  # the accounting settles what the killed export left pending
        files = list(folder.iterdir())
        new = made[len(made_before):]
        if files:
            tally.acknowledged += 1
            digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
            if [f.name for f in files] != ["media.zip"] or [d.sha256 for d in new] != [digest]:
                tally.leftovers += 1
                tally.found(f"kill {i}: media {[f.name for f in files]} not accounted for exactly once")
        elif new:
            tally.leftovers += len(new)
            tally.found(f"kill {i}: a disclosure without media")
        stray = [p for p in tmp.rglob("*") if not p.is_dir()]
        if stray:
            tally.leftovers += len(stray)
            tally.found(f"kill {i}: {len(stray)} files left in the temporary directory")
        station.check(tally)
    tally.seconds = time.perf_counter() - started
    return tally


def _made(station: Station, patient: Patient) -> list[Disclosure]:
    found = station.vault.disclosure.disclosures(station.env.login("po"), patient.patient_id)
    return sorted((d for d in found if d.state == "made"), key=lambda d: d.id)
