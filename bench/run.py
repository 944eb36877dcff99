"""Custodian benchmarks: each figure is measured beside a peer in the same run.

    python bench/run.py [--quick] [--json]

Prints a list of {"figure", "value", "unit", "peer", "peer_value", "ratio", "target", "met"}
(see CONTRACT.md). Ratios are peer time / Custodian time, so higher is better for Custodian.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import runpy
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.audit.events import AuditEvent, EventType  # noqa: E402
from app.security import totp  # noqa: E402
from app.security.roles import Role  # noqa: E402
from app.vault import Vault  # noqa: E402
from bench.figures import Figure  # noqa: E402
from bench.peers import bench_peers, getscu, receive_ours  # noqa: E402
from bench.scale import bench_scale  # noqa: E402
from bench.startup import bench_startup  # noqa: E402
from bench.window import bench_window  # noqa: E402

MAKE_CT = ROOT.parent / "shared" / "tools" / "make_ct.py"

# FRESH_MEMORY: on this VM, writing into page-cache memory the guest has never used costs about
# twice what writing into memory the kernel just freed does (measured: 7-Zip's export of the CT
# takes 0.38 s into a new file while the old ones are kept, 0.17 s after deleting the previous
# archive). The peers' runs always wrote into freed memory (7-Zip's archive and the durable copy
# are deleted before each run), so each of our runs deletes the previous run's output too.

UNATTAINABLE_BELOW_1 = "informational (below 1: the target cannot be met on this machine)"
CORES = len(os.sched_getaffinity(0))


def make_series(folder: Path, slices: int) -> list[Path]:
    """The shared synthetic CT when the tool is beside the project, else our own phantom."""
    if MAKE_CT.exists():
        runpy.run_path(str(MAKE_CT))["main"](str(folder), slices)
    else:
        from app.demo.studies import Patient, ct_study, to_bytes

        folder.mkdir(parents=True, exist_ok=True)
        for i, ds in enumerate(ct_study(Patient("BENCH001", "BENCH^PATIENT"), slices=slices, size=512)):
            (folder / f"CT{i:05d}.dcm").write_bytes(to_bytes(ds))
    return sorted(folder.glob("*.dcm"))


def timed(func: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median_of(runs: int, func: Callable[[], object]) -> float:
    return statistics.median(timed(func) for _ in range(runs))


def _write_synced(path: Path, data: bytes | memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)


def durable_copy(files: list[Path], folder: Path) -> None:
    """What any store that survives power loss must at least do: write and fsync every byte."""
    from concurrent.futures import ThreadPoolExecutor

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda path: _write_synced(folder / path.name, path.read_bytes()), files))


def required_import_cpu(files: list[Path], folder: Path) -> float:
    """CPU seconds of the work no encrypted, durable import can skip (read, header parse, SHA-256,
    AES-256-GCM, write + fsync), done one file after another with nothing around it. The kernel's
    writeback is not counted, so this is a lower bound; divided by the cores it is the fastest any
    importer could be on this machine, however well it spreads the work."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from app.store.ingest import parse

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    aes, nonce = AESGCM(AESGCM.generate_key(256)), bytes(12)
    sealed = bytearray()
    start = time.thread_time()
    for path in files:
        data = path.read_bytes()
        parse(data)
        hashlib.sha256(data).digest()
        if len(sealed) < len(data) + 16:
            sealed = bytearray(len(data) + 16)
        out = memoryview(sealed)[: len(data) + 16]
        aes.encrypt_into(nonce, data, b"", out)
        _write_synced(folder / path.name, out)
    return time.thread_time() - start


class Workstation:
    """A fresh vault with a technologist (imports) and a radiologist (reads) logged in."""

    def __init__(self, home: Path, *, service: bool = False) -> None:
        """``service``: a service vault (master key in a key file), as ``init --service`` makes."""
        from app.security.sealing import KeyFileSealer

        password = "bench-password-0001"
        self.vault, enrolment = Vault.create(home, admin="admin", password=password,
                                             passphrase=None if service else "bench passphrase",
                                             use_keyring=False, sealer=KeyFileSealer() if service else None)
        _, self.admin = self.vault.accounts.login("admin", password, totp.current_code(enrolment.totp_secret))
        tech = self.vault.admin.add_user(self.admin, "tech", Role.TECHNOLOGIST, password)
        rad = self.vault.admin.add_user(self.admin, "rad", Role.RADIOLOGIST, password)
        _, self.tech = self.vault.accounts.login("tech", password, totp.current_code(tech.totp_secret))
        _, self.rad = self.vault.accounts.login("rad", password, totp.current_code(rad.totp_secret))
        self.password = password
        self.secrets = {"tech": tech.totp_secret, "rad": rad.totp_secret}


def bench_import_and_load(work: Path, slices: int, runs: int) -> list[Figure]:
    files = make_series(work / "ct", slices)
    for f in files:  # warm the page cache for both sides alike
        f.read_bytes()
    mb = sum(f.stat().st_size for f in files) / 1e6

    peer_import = median_of(runs, lambda: [pydicom.dcmread(f) for f in files])
    floor = median_of(runs, lambda: durable_copy(files, work / "floor"))
    required = statistics.median(required_import_cpu(files, work / "floor") for _ in range(runs))
    ours = []
    for i in range(runs):
        station = Workstation(work / f"home{i}")
        ours.append(timed(lambda s=station: s.vault.intake.import_paths(s.tech, [work / "ct"])))
        if i < runs - 1:
            station.vault.close()
            shutil.rmtree(work / f"home{i}")  # see FRESH_MEMORY
    our_import = statistics.median(ours)

    study = station.vault.reading.studies(station.rad)[0]
    series_uid = station.vault.reading.series(station.rad, study.study_uid)[0].series_uid

    def our_load() -> np.ndarray:
        return station.vault.reading.open_series(station.rad, series_uid).volume()

    def peer_load() -> np.ndarray:
        return np.stack([pydicom.dcmread(f).pixel_array for f in files])

    assert (our_load() == peer_load()[::-1]).all() or (our_load() == peer_load()).all()
    peer_load_s = median_of(runs, peer_load)
    our_load_s = median_of(runs, our_load)
    station.vault.close()
    return [
        Figure(f"import {slices}-slice 512x512 CT ({mb:.0f} MB)", round(our_import, 3), "s",
               "durable copy of the same files (write + fsync each, 4 threads; the disk's floor)",
               round(floor, 3), round(floor / our_import, 2), "informational", None),
        Figure(f"CPU time of the work any encrypted durable import of the {slices}-slice CT must do "
               "(read, parse, SHA-256, AES-GCM, write + fsync)", round(required, 3), "CPU-s",
               f"CPU the 0.7 target leaves: {CORES} cores x dcmread time / 0.7",
               round(CORES * peer_import / 0.7, 3), round(CORES * peer_import / 0.7 / required, 2),
               UNATTAINABLE_BELOW_1, None),
        Figure(f"import {slices}-slice 512x512 CT ({mb:.0f} MB)", round(our_import, 3), "s",
               "plain pydicom dcmread of the same files", round(peer_import, 3),
               round(peer_import / our_import, 2), ">= 0.7", peer_import / our_import >= 0.7),
        Figure(f"load {slices}-slice CT from the vault into a numpy volume", round(our_load_s, 3), "s",
               "plain pydicom dcmread + pixel_array + np.stack", round(peer_load_s, 3),
               round(peer_load_s / our_load_s, 2), ">= 0.8", peer_load_s / our_load_s >= 0.8),
    ]


def _events(n: int, offset: int = 0) -> list[AuditEvent]:
    """Image reads, the commonest event, each naming a study and a patient."""
    return [AuditEvent(EventType.INSTANCES_READ, user=f"rad{i % 7}", studies=(f"1.2.826.0.1.3680043.{i}",),
                       patients=(f"PID{i % 500:05d}",), detail={"instances": 120})
            for i in range(offset, offset + n)]


def plain_sqlite_appends(path: Path, messages: list[str]) -> None:
    """A naive durable log: unencrypted SQLite, WAL, synchronous FULL, one commit per event."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, message TEXT)")
    for message in messages:
        conn.execute("INSERT INTO log (message) VALUES (?)", (message,))
    conn.close()


def bench_audit(work: Path, appends: int, chain: int, backlog: int) -> list[Figure]:
    import threading

    from app.audit.dicom_xml import to_xml

    station = Workstation(work / "audit-home")
    vault = station.vault
    writers = 8
    per_writer = _events(appends)

    def group_commit() -> None:
        def writer(k: int) -> None:
            for event in per_writer[k::writers]:
                vault._gate._record(event)  # returns only once its commit is durable
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    ours = timed(group_commit)
    messages = [to_xml(e, "2026-11-23T10:00:00.000000+00:00") for e in per_writer]
    peer = timed(lambda: plain_sqlite_appends(work / "plain.db", messages))
    figures = [Figure(f"durable audit appends, {writers} writer threads (group commit, fsync per batch)",
                      round(appends / ours), "events/s", "unencrypted SQLite, one fsynced commit per event",
                      round(appends / peer), round(peer / ours, 2), ">= 1000/s", appends / ours >= 1000)]

    with vault._core.transaction():  # build a long chain quickly
        for start in range(0, chain, 5000):
            vault._gate._audit.append_all(_events(min(5000, chain - start), start))
    report = vault._gate._audit.verify()
    assert report.ok
    verify_s = timed(vault._gate._audit.verify)
    rows = vault._core.query("SELECT at, record, message FROM audit")
    peer_s = timed(lambda: [hashlib.sha256(f"{a}{r}{m}".encode()).digest() for a, r, m in rows])
    events = report.events
    figures.append(Figure(f"audit chain verify ({events} events, signatures included)",
                          round(events / verify_s), "events/s",
                          "SHA-256 of the same records already in memory (no database, no decryption)",
                          round(events / peer_s), round(peer_s / verify_s, 2), ">= 100000/s",
                          events / verify_s >= 100_000))
    figures += bench_drain(work, station, backlog)
    vault.close()
    return figures


def bench_drain(work: Path, station: Workstation, backlog: int) -> list[Figure]:
    """Drain a backlog to a real rsyslog over mutual TLS, beside a raw TLS write of the same bytes."""
    import socket

    if shutil.which("rsyslogd") is None and not Path("/usr/sbin/rsyslogd").exists():
        print("rsyslogd not installed: the drain figure is skipped", file=sys.stderr)
        return []
    from app.audit.repository import Repository
    from app.audit.syslog import event_message, frame
    from app.security.tls import TlsIdentity, client_context
    from tests.peers.pki import Authority
    from tests.peers.rsyslog import Rsyslog

    ca = Authority(work / "pki")
    server, client = ca.issue("audit.bench.test"), ca.issue("workstation")
    identity = TlsIdentity.from_files(ca.cert, client.cert, client.key)
    peer = Rsyslog(work / "rsyslog", ca.cert, server)
    vault = station.vault
    repository = Repository("127.0.0.1", peer.port, identity, "audit.bench.test")
    vault.trail.set_repository(station.admin, repository)
    forwarder = vault.trail.forwarder()
    with vault._core.transaction():  # everything before the backlog counts as already sent
        vault._core.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_sent_seq', ?)",
                            (str(vault._gate._audit.head()),))
    start_seq = vault._gate._audit.head()
    vault._gate._audit.append_all(_events(backlog, 10**6))
    peer.start()
    try:
        ours = timed(forwarder.drain)
        assert forwarder.status().pending == 0
        payload = b"".join(frame(event_message(e, "bench")) for e in vault._gate._audit.entries(start_seq))

        def raw() -> None:
            context = client_context(identity)
            with context.wrap_socket(socket.create_connection(("127.0.0.1", peer.port)),
                                     server_hostname="audit.bench.test") as tls:
                tls.sendall(payload)
                with contextlib.suppress(ssl.SSLError):
                    tls.unwrap()

        raw_s = timed(raw)
        peer.wait_for(2 * backlog, timeout=60)
    finally:
        peer.stop()
    return [Figure(f"drain a {backlog}-event audit backlog to rsyslog (mutual TLS, confirmed batches)",
                   round(ours, 3), "s", "one raw TLS write of the same framed messages to the same rsyslog",
                   round(raw_s, 3), round(raw_s / ours, 2), "< 30 s", ours < 30)]


def _storescu(port: int, called: str, files: list[Path]) -> float:
    from tests.peers.dcmtk import storescu

    started = time.perf_counter()
    sent = storescu(port, files, called=called)
    if sent.returncode != 0:
        raise RuntimeError(f"storescu failed: {sent.stderr[-500:]}")
    return time.perf_counter() - started


def plain_pynetdicom_scp(folder: Path) -> tuple[object, int]:
    """The minimal pynetdicom SCP the issue measures against: each data set to a plain file."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from app.net.association import NO_DELAY
    from app.net.part10 import of_store_event

    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: evt.Event) -> int:
        (folder / event.request.AffectedSOPInstanceUID).write_bytes(of_store_event(event))
        return 0x0000

    ae = AE(ae_title="PLAINSCP")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[NO_DELAY, (evt.EVT_C_STORE, on_store)])
    return server, server.server_address[1]


def _receive_embedded(home: Path, files: list[Path]) -> float:
    """Seconds for storescu to send ``files`` to the storage SCP of a fresh vault in ``home``, run
    in this process (as ``custodian scp`` runs it)."""
    return receive_ours(home, [files])


def bench_scp(work: Path, slices: int) -> list[Figure]:
    """storescu into the running Custodian SCP, beside DCMTK storescp and a minimal pynetdicom SCP."""

    if shutil.which("storescu") is None:
        print("DCMTK not installed: the storage SCP figures are skipped", file=sys.stderr)
        return []
    from tests.peers.dcmtk import StoreScp

    files = make_series(work / "scp-ct", slices)
    mb = sum(f.stat().st_size for f in files) / 1e6
    ours = _receive_embedded(work / "scp-home", files)
    dcmtk = StoreScp(work / "storescp")
    dcmtk.start()
    try:
        dcmtk_s = _storescu(dcmtk.port, "STORESCP", files)
    finally:
        dcmtk.stop()
    server, port = plain_pynetdicom_scp(work / "plain-scp")
    try:
        plain_s = _storescu(port, "PLAINSCP", files)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    label = f"receive a {slices}-slice CT ({mb:.0f} MB) from DCMTK storescu"
    return [
        Figure(label, round(ours, 3), "s", "minimal pynetdicom SCP writing plain files (no fsync)",
               round(plain_s, 3), round(plain_s / ours, 2), ">= 1.0", plain_s / ours >= 1.0),
        Figure(label, round(ours, 3), "s", "DCMTK storescp writing plain files (no fsync)",
               round(dcmtk_s, 3), round(dcmtk_s / ours, 2), ">= 0.5", dcmtk_s / ours >= 0.5),
        # The first target bounds the second: a receiver built on pynetdicom reaches DCMTK's
        # ratio only where the minimal pynetdicom SCP itself reaches it.
        Figure(f"{label} by the minimal pynetdicom SCP", round(plain_s, 3), "s",
               "DCMTK storescp writing plain files (no fsync)", round(dcmtk_s, 3),
               round(dcmtk_s / plain_s, 2), "informational (what pynetdicom itself reaches)", None),
    ]


def bench_retrieve(work: Path, slices: int) -> list[Figure]:
    """A study from Orthanc into the vault by C-GET and by C-MOVE, beside DCMTK getscu writing plain
    files (C-GET's target: at least getscu's speed; C-MOVE informational)."""
    if shutil.which("Orthanc") is None or shutil.which("getscu") is None:
        print("Orthanc or DCMTK not installed: the retrieve figures are skipped", file=sys.stderr)
        return []
    from app.net.nodes import Node
    from tests.peers.orthanc import AET, Orthanc
    from tests.peers.ports import free_port

    files = make_series(work / "qr-ct", slices)
    mb = sum(f.stat().st_size for f in files) / 1e6
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    scp_port = free_port()
    pacs = Orthanc(work / "orthanc", known={"custodian": ("CUSTODIAN", scp_port),
                                            "getscu": ("GETSCU", 104), "modality": ("STORESCU", 104)})
    pacs.start()
    try:
        _storescu(pacs.port, AET, files)
        figures = []
        for move in (False, True):
            station = Workstation(work / f"qr-home-{'move' if move else 'get'}")
            station.vault.admin.set_policy(station.admin, "scp_port", str(scp_port))
            station.vault.nodes.add(station.admin, Node("pacs", AET, "127.0.0.1", pacs.port))
            reports: list[object] = []
            ours = timed(lambda s=station, m=move, r=reports: r.append(
                s.vault.pacs.retrieve(s.rad, "pacs", study_uid, move=m)))
            assert reports[0].received == slices, reports  # type: ignore[attr-defined]
            station.vault.close()
            out = work / f"getscu-{int(move)}"
            peer = getscu(pacs.port, AET, study_uid, out)
            assert len(list(out.iterdir())) == slices
            target = None if move else 1.0  # issue 24: C-GET at least as fast as getscu
            figures.append(Figure(
                f"retrieve a {slices}-slice CT ({mb:.0f} MB) from Orthanc by {'C-MOVE' if move else 'C-GET'}",
                round(ours, 3), "s", "DCMTK getscu of the same study writing plain files (no fsync)",
                round(peer, 3), round(peer / ours, 2), f">= {target}" if target else "informational",
                peer / ours >= target if target else None))
        return figures
    finally:
        pacs.stop()


def required_export_cpu(files: list[Path]) -> float:
    """CPU seconds of the work no encrypted PDI export of ``files`` can skip, one step after another
    with nothing around it: opening each AES-GCM blob, the DICOMDIR, per entry the WinZip AE key
    derivation (PBKDF2, 1000 rounds), AES-CTR and HMAC-SHA1, and the container's SHA-256."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from app.media import dicomdir
    from app.media.archive import seal_entry
    from app.store.ingest import parse

    aes, nonce = AESGCM(AESGCM.generate_key(256)), bytes(12)
    blobs = [aes.encrypt(nonce, f.read_bytes(), b"") for f in files]
    parsed = [parse(aes.decrypt(nonce, blob, b"")) for blob in blobs]
    paths = dicomdir.file_ids([(p.patient_id, p.study_uid, p.series_uid) for p in parsed])
    listed = [dicomdir.Listed(p.patient_id, p.patient_name, p.study_uid, p.study_date, p.study_time, "",
                              p.accession, p.study_description, p.series_uid, p.modality, p.series_number,
                              p.sop_class, p.sop_uid, p.transfer_syntax, p.instance_number, path)
              for p, path in zip(parsed, paths, strict=True)]
    start = time.thread_time()
    container = hashlib.sha256(dicomdir.build(listed))
    for path, blob in zip(paths, blobs, strict=True):
        container.update(seal_entry(b"bench pass phrase", path, aes.decrypt(nonce, blob, b"")).body)
    return time.thread_time() - start


def bench_export(work: Path, slices: int, runs: int) -> list[Figure]:
    """Encrypted USB export of a CT from the vault (read, decrypt, DICOMDIR, AES-256 zip, disclosure
    record) beside 7-Zip zipping the same files from the page cache with AES-256."""
    import subprocess

    from app.media.disclosures import (
        Delivery,
        ExportRequest,
        IdentityCheck,
        MediaKind,
        Purpose,
        RecipientKind,
    )

    files = make_series(work / "export-ct", slices)
    for f in files:
        f.read_bytes()
    station = Workstation(work / "export-home")
    station.vault.intake.import_paths(station.tech, [work / "export-ct"])
    study_uid = station.vault.reading.studies(station.rad)[0].study_uid
    password = "bench-password-0001"
    out = work / "export-out"
    out.mkdir()
    ours = []
    for i in range(runs):  # a librarian each: one code to log in, the next for the export's step-up
        enrolment = station.vault.admin.add_user(station.admin, f"lib{i}", Role.LIBRARIAN, password)
        step = int(time.time() // totp.STEP)
        _, session = station.vault.accounts.login(f"lib{i}", password,
                                         totp.current_code(enrolment.totp_secret, at=step * totp.STEP))
        code = totp.current_code(enrolment.totp_secret, at=(step + 1) * totp.STEP)
        request = ExportRequest((study_uid,), RecipientKind.PATIENT, "Bench Patient",
                                Purpose.PATIENT_REQUEST, IdentityCheck.PHOTO_ID, Delivery.HANDED_OVER,
                                MediaKind.ZIP, out / f"ours{i}.zip")
        ours.append(timed(lambda r=request, s=session, c=code: station.vault.disclosure.export(s, r, c)))
        request.out.unlink()  # as 7-Zip's archive is before each of its runs (see FRESH_MEMORY)
    station.vault.close()

    def seven_zip() -> None:
        subprocess.run(["7z", "a", "-tzip", "-mem=AES256", "-mx=0", "-pbench-pass-phrase",
                        str(out / "peer.zip"), str(work / "export-ct")], check=True, capture_output=True)

    peer = []
    for _ in range(runs):
        (out / "peer.zip").unlink(missing_ok=True)
        peer.append(timed(seven_zip))
    our_s, peer_s = statistics.median(ours), statistics.median(peer)
    required = statistics.median(required_export_cpu(files) for _ in range(runs))
    budget = CORES * peer_s / 0.7
    mb = sum(f.stat().st_size for f in files) / 1e6
    return [Figure(f"encrypted USB export of a {slices}-slice CT ({mb:.0f} MB, PDI zip, AES-256)",
                   round(our_s, 3), "s", "7z a -tzip -mem=AES256 -mx=0 on the same files", round(peer_s, 3),
                   round(peer_s / our_s, 2), ">= 0.7", peer_s / our_s >= 0.7),
            Figure(f"CPU time of the work any encrypted PDI export of the {slices}-slice CT must do "
                   "(open the blobs, DICOMDIR, per-entry PBKDF2 + AES-CTR + HMAC, SHA-256 of the container)",
                   round(required, 3), "CPU-s",
                   f"CPU the 0.7 target leaves: {CORES} cores x 7-Zip's time / 0.7",
                   round(budget, 3), round(budget / required, 2), UNATTAINABLE_BELOW_1, None)]


SERVE = """
import sys, uvicorn
from pathlib import Path
from app.service.daemon import listen
from app.service.server import Admission, PeerProtocol, application
from app.vault import Vault
vault = Vault.open(Path(sys.argv[1]), lambda: "bench passphrase")
config = uvicorn.Config(application(vault, Admission(None), locked=lambda: None), http=PeerProtocol,
                       lifespan="off", log_level="warning", access_log=False)
uvicorn.Server(config).run(sockets=[listen(Path(sys.argv[2]), None)])
"""


@contextlib.contextmanager
def served(home: Path, sock: Path) -> Iterator[None]:
    """The workstation service's socket around ``home``, in its own process."""
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", SERVE, str(home), str(sock)], cwd=ROOT)
    try:
        while not sock.exists():
            if process.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(30)


def _receive_through_service(work: Path, files: list[Path]) -> tuple[float, float]:
    """storescu into the SCP the workstation service runs (``custodian service``, its own process),
    and into the same SCP run embedded, in seconds."""
    import subprocess

    from app.net.nodes import Node
    from tests.peers.ports import free_port

    embedded = _receive_embedded(work / "rcv-embedded", files)
    shutil.rmtree(work / "rcv-embedded")  # see FRESH_MEMORY
    station = Workstation(work / "rcv-service", service=True)
    port = free_port()
    station.vault.admin.set_policy(station.admin, "scp_port", str(port))
    station.vault.nodes.add(station.admin, Node("modality", "STORESCU", "127.0.0.1", 104))
    station.vault.close()
    sock = work / "rcv.sock"
    process = subprocess.Popen([sys.executable, "-m", "app", "service", "--home", str(work / "rcv-service"),
                                "--socket", str(sock)], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        import socket

        deadline = time.time() + 60
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None:
                raise RuntimeError("the workstation service did not start")
            time.sleep(0.1)
        through = _storescu(port, "CUSTODIAN", files)
    finally:
        process.terminate()
        process.wait(30)
    shutil.rmtree(work / "rcv-service")
    return through, embedded


def _service_jobs(vault: object, tech: object, rad: object, ct: Path) -> tuple[float, ...]:
    """Import, a study list (median of 50), every instance fetched one by one, the first image of
    the series and the whole series as a volume, in seconds; then scrolling, in frames/s."""
    v: Vault = vault  # type: ignore[assignment]  # (or the service's RemoteVault: the same methods)
    imported = timed(lambda: v.intake.import_paths(tech, [ct]))  # type: ignore[arg-type]
    sops = _instances(ct)
    listing = median_of(50, lambda: v.reading.studies(rad))  # type: ignore[arg-type]
    fetching = timed(lambda: [v.reading.read_instance(rad, u) for u in sops])  # type: ignore[arg-type]
    study = v.reading.studies(rad)[0].study_uid  # type: ignore[arg-type]
    series_uid = v.reading.series(rad, study)[0].series_uid  # type: ignore[arg-type]
    first = median_of(5, lambda: v.reading.open_series(rad, series_uid).render(0))  # type: ignore[arg-type]
    volume = median_of(3, lambda: v.reading.open_series(rad, series_uid).volume())  # type: ignore[arg-type]
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.imaging.display import Window
    from app.ui.image_view import ImageView

    app = QApplication.instance() or QApplication([])
    view = ImageView()
    view.resize(1024, 1024)
    view.show()
    app.processEvents()
    series = v.reading.open_series(rad, series_uid)  # type: ignore[arg-type]
    scrolling = len(series) / scrolled(view, series, Window(40, 400))
    view.set_series(None)
    return imported, listing, fetching, first, volume, scrolling


def _instances(ct: Path) -> list[str]:
    return [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sorted(ct.glob("*.dcm"))]


def bench_service(work: Path, slices: int, runs: int) -> list[Figure]:
    """The same jobs in embedded mode and through the service's socket, side by side."""
    from app.service.client import RemoteVault

    files = make_series(work / "svc-ct", slices)
    embedded, through = [], []
    for i in range(runs):
        station = Workstation(work / f"svc-embedded{i}")
        embedded.append(_service_jobs(station.vault, station.tech, station.rad, work / "svc-ct"))
        station.vault.close()
        shutil.rmtree(work / f"svc-embedded{i}")  # see FRESH_MEMORY
        station = Workstation(work / f"svc-home{i}")
        station.vault.close()
        with served(work / f"svc-home{i}", work / f"svc{i}.sock"):
            remote = RemoteVault(work / f"svc{i}.sock")
            later = time.time() + totp.STEP  # the next step: a code is never taken twice
            _, tech = remote.accounts.login("tech", station.password,
                                            totp.current_code(station.secrets["tech"], at=later))
            _, rad = remote.accounts.login("rad", station.password,
                                           totp.current_code(station.secrets["rad"], at=later))
            through.append(_service_jobs(remote, tech, rad, work / "svc-ct"))
            remote.close()
        shutil.rmtree(work / f"svc-home{i}")
    mb = sum(f.stat().st_size for f in files) / 1e6
    plain = median_of(3, lambda: np.stack([pydicom.dcmread(f).pixel_array for f in files]))
    ours = [statistics.median(run[k] for run in through) for k in range(6)]
    peer = [statistics.median(run[k] for run in embedded) for k in range(6)]
    receiving = []
    if shutil.which("storescu"):
        received = [_receive_through_service(work, files) for _ in range(runs)]
        through_s, embedded_s = (statistics.median(r[k] for r in received) for k in (0, 1))
        receiving.append(Figure(f"receive {slices}-slice CT from DCMTK storescu into the service's SCP",
                                round(through_s, 3), "s", "the same SCP run embedded (custodian scp)",
                                round(embedded_s, 3), round(embedded_s / through_s, 2), "informational",
                                None))
    return [*receiving,
        Figure(f"import {slices}-slice CT ({mb:.0f} MB) through the service's socket", round(ours[0], 3), "s",
               "the same import in embedded mode", round(peer[0], 3), round(peer[0] / ours[0], 2),
               "informational", None),
        Figure("study list through the service's socket", round(ours[1] * 1000, 2), "ms",
               "the same call in embedded mode", round(peer[1] * 1000, 2), round(peer[1] / ours[1], 2),
               "informational", None),
        Figure(f"{slices} stored instances fetched one by one through the socket", round(ours[2], 3), "s",
               "the same reads in embedded mode", round(peer[2], 3), round(peer[2] / ours[2], 2),
               "informational", None),
        Figure("first image of the series through the socket (open, fetch, decode, window)",
               round(ours[3] * 1000, 1), "ms", "the same in embedded mode", round(peer[3] * 1000, 1),
               round(peer[3] / ours[3], 2), "< 300 ms", ours[3] < 0.3),
        Figure("scroll the series with W/L through the socket (each slice fetched, decoded, painted)",
               round(ours[5], 1), "frames/s", "the same in embedded mode", round(peer[5], 1),
               round(ours[5] / peer[5], 2), ">= 60 frames/s", ours[5] >= 60),
        Figure(f"load the {slices}-slice series into a numpy volume through the socket", round(ours[4], 3),
               "s", "plain pydicom dcmread + pixel_array + np.stack", round(plain, 3),
               round(plain / ours[4], 2), ">= 0.8", plain / ours[4] >= 0.8),
        Figure(f"load the {slices}-slice series into a numpy volume through the socket", round(ours[4], 3),
               "s",
               "the same in embedded mode", round(peer[4], 3), round(peer[4] / ours[4], 2),
               "informational", None),
    ]


def scrolled(view: object, series: object, window: object) -> float:
    """Seconds to show every slice of ``series`` in ``view`` (an ImageView), one after another."""
    view.set_series(series)  # type: ignore[attr-defined]
    view.set_window(window)  # type: ignore[attr-defined]

    def scroll() -> None:
        for i in range(len(series)):  # type: ignore[arg-type]
            view.set_index(i)  # type: ignore[attr-defined]
            view.repaint()  # type: ignore[attr-defined]
    return timed(scroll)


def bench_reading(work: Path, slices: int) -> list[Figure]:
    """Reading a cached CT offscreen: first image, scrolling with W/L, MPR reslice, volume memory."""
    import tracemalloc

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    from app.imaging.display import Window, apply_window
    from app.imaging.mpr import Reslicer
    from app.imaging.volume import build_volume, reference_slice
    from app.ui.image_view import ImageView

    app = QApplication.instance() or QApplication([])
    files = make_series(work / "read-ct", slices)
    station = Workstation(work / "read-home")
    station.vault.intake.import_paths(station.tech, [work / "read-ct"])
    study = station.vault.reading.studies(station.rad)[0]
    series_uid = station.vault.reading.series(station.rad, study.study_uid)[0].series_uid
    window = Window(40, 400)
    view = ImageView()
    view.resize(1024, 1024)
    view.show()
    app.processEvents()

    def our_first() -> None:
        view.set_series(station.vault.reading.open_series(station.rad, series_uid))
        view.repaint()

    def peer_first() -> None:
        ds = pydicom.dcmread(files[0])
        grey = apply_window(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), window)
        QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0], QImage.Format.Format_Grayscale8)

    first_ours, first_peer = median_of(5, our_first), median_of(5, peer_first)

    def peer_scroll() -> None:
        for f in files:
            ds = pydicom.dcmread(f)
            apply_window(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), window)

    # every slice decrypted and decoded on the way
    scroll_ours = slices / scrolled(view, station.vault.reading.open_series(station.rad, series_uid), window)
    scroll_peer = slices / timed(peer_scroll)

    series = station.vault.reading.open_series(station.rad, series_uid)
    tracemalloc.start()
    volume = build_volume(series)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    reslicer = Reslicer(volume)
    rows = volume.shape[1]
    reslice_ours = statistics.median(timed(lambda j=j: reslicer.slice("coronal", j))
                                     for j in range(0, rows, 16))
    reslice_peer = statistics.median(timed(lambda j=j: reference_slice(volume, "coronal", j))
                                     for j in range(0, rows, 16))
    slab_ours = statistics.median(timed(lambda j=j: reslicer.slice("coronal", j, 9, "mip"))
                                  for j in range(0, rows, 16))
    view.set_series(None)
    station.vault.close()
    mb = volume.data.nbytes / 1e6
    return [
        Figure(f"open a cached {slices}-slice CT to the first painted image", round(first_ours * 1000, 1),
               "ms", "pydicom read + numpy window + QImage of one slice", round(first_peer * 1000, 1),
               round(first_peer / first_ours, 2), "< 300 ms", first_ours < 0.3),
        Figure("scroll with W/L applied, painted (each slice decrypted and decoded)", round(scroll_ours, 1),
               "frames/s", "pydicom read + numpy window per slice (not painted)", round(scroll_peer, 1),
               round(scroll_ours / scroll_peer, 2), ">= 60 frames/s", scroll_ours >= 60),
        Figure("MPR coronal reslice of the volume (VTK)", round(reslice_ours * 1000, 2), "ms",
               "numpy reformat of the same plane", round(reslice_peer * 1000, 2),
               round(reslice_peer / reslice_ours, 2), "< 50 ms", reslice_ours < 0.05),
        Figure("MPR coronal 9-slice MIP slab (VTK)", round(slab_ours * 1000, 2), "ms",
               "numpy reformat of a single plane", round(reslice_peer * 1000, 2),
               round(reslice_peer / slab_ours, 2), "< 50 ms", slab_ours < 0.05),
        Figure(f"peak memory building the volume ({mb:.0f} MB of int16)", round(peak / 1e6, 1), "MB",
               "the volume's own size", round(mb, 1), round(peak / 1e6 / mb, 2), "<= 1.5x the volume",
               peak / 1e6 <= 1.5 * mb),
    ]


def bench_mpr_window(work: Path, slices: int) -> list[Figure]:
    """Ctrl+M to 3D in the real reading window (Xvfb, Mesa's software OpenGL), timed by the
    application's own trace (CUSTODIAN_TRACE): the loading progress, the three MPR planes and
    the volume rendering on screen. The peer is the floor of any opening: the same volume decoded
    from the vault with no window at all."""
    from app import trace
    from tests.ui3d.panes import run_under_xvfb

    make_series(work / "mpr-ct", slices)
    out, timeline = work / "mpr.npz", work / "mpr-trace.jsonl"
    run_under_xvfb(["tests.ui3d.opening", str(out), str(work / "mpr-ct")], timeout=900,
                   extra={trace.VARIABLE: str(timeline)})
    moments = trace.read(timeline)
    asked = trace.first(moments, "mpr.requested")
    assert asked is not None
    with np.load(out) as saved:
        alone = float(saved["volume_alone"][0])
    seconds = {}
    for event in ("mpr.progress", "mpr.planes", "mpr.render"):
        moment = trace.first(moments, event, after=asked.t)
        assert moment is not None, event
        seconds[event] = moment.t - asked.t
    floor = "decode the volume from the vault, no window"
    planes, render, progress = seconds["mpr.planes"], seconds["mpr.render"], seconds["mpr.progress"]
    return [
        Figure(f"Ctrl+M to the loading progress on screen ({slices}-slice CT, real window)",
               round(progress, 3), "s", floor, round(alone, 3), round(alone / progress, 2), "informational",
               None),
        Figure(f"Ctrl+M to the three MPR planes on screen ({slices}-slice CT, real window)", round(planes, 3),
               "s", floor, round(alone, 3), round(alone / planes, 2), "<= 2 s", planes <= 2.0),
        Figure(f"Ctrl+M to the volume rendering on screen ({slices}-slice CT, real window, built after "
               "the planes)", round(render, 3), "s", floor, round(alone, 3), round(alone / render, 2),
               "informational", None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data; the whole run under a minute")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", action="append",
                        choices=["import", "audit", "scp", "retrieve", "peers", "export", "reading", "mpr",
                                 "service", "startup", "scale", "window"],
                        help="run only these groups (repeatable)")
    args = parser.parse_args(argv)
    groups = set(args.only or ["import", "audit", "scp", "retrieve", "peers", "export", "reading", "mpr",
                                "service", "startup", "scale", "window"])
    slices, runs = (60, 3) if args.quick else (300, 5)
    # Nagle off in every DCMTK tool and in Orthanc (DCMTK inside reads this too), as in our own
    # sockets: else each of their answers waits for the other side's delayed ACK (40 ms here), and
    # the peers are measured at their worst.
    os.environ["TCP_NODELAY"] = "1"
    appends, chain, backlog = (500, 20_000, 2_000) if args.quick else (2_000, 100_000, 10_000)
    with tempfile.TemporaryDirectory(prefix="custodian-bench-") as tmp:
        work = Path(tmp)
        figures = bench_import_and_load(work, slices, runs) if "import" in groups else []
        figures += bench_audit(work, appends, chain, backlog) if "audit" in groups else []
        figures += bench_scp(work, slices) if "scp" in groups else []
        figures += bench_retrieve(work, slices) if "retrieve" in groups else []
        figures += bench_peers(work, slices, min(runs, 3)) if "peers" in groups else []
        figures += bench_export(work, slices, runs) if "export" in groups else []
        figures += bench_reading(work, slices) if "reading" in groups else []
        figures += bench_mpr_window(work, slices) if "mpr" in groups else []
        figures += bench_service(work, slices, min(runs, 3)) if "service" in groups else []
        figures += bench_startup(work, 5) if "startup" in groups else []
        figures += bench_scale(work, args.quick) if "scale" in groups else []
        figures += bench_window(work, slices) if "window" in groups else []
    if args.json:
        print(json.dumps([asdict(f) for f in figures], indent=1))
    else:
        for f in figures:
            verdict = "informational" if f.met is None else "met" if f.met else "NOT met"
            print(f"{f.figure}: {f.value} {f.unit} vs {f.peer} {f.peer_value} {f.unit} "
                  f"-> ratio {f.ratio} (target {f.target}: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
