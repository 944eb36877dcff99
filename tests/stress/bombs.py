"""Hostile input as figures: decompression bombs (a zip, a deflated data set from a file and over
DICOM, a CD image of hard links) and a folder of special files and links, each handed to a real
``custodian`` process whose time to refuse and peak memory are measured, and what each left in
the vault afterwards.

Shared by the CI subset (tests/stress/test_bombs.py) and the long runner (tests/stress/run.py).
The bombs are built here, streamed, so building one costs little memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from app.demo.studies import Patient, ct_study, to_bytes
from app.net.nodes import Node
from app.security.roles import Role
from app.store.blobs import BLOB_DIR
from tests.conftest import PASSPHRASE, REPO, VaultEnv, make_env
from tests.peers.ports import free_port, wait_listening
from tests.peers.sender import echoed

MiB = 1024 * 1024
SENDER_AE = "BOMBSENDER"
MARKER = b"OUTSIDE-THE-SOURCE-MARKER"
HANG = 120.0  # seconds after which a child counts as hung (and is killed)


# ---------------------------------------------------------------------------- the bombs
def zip_bomb(path: Path, members: int = 8, size: int = 256 * MiB) -> Path:
    """A zip of ``members`` zero-filled members of ``size`` bytes each (2 MB for eight of 256 MiB)."""
    zero = bytes(MiB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(members):
            with archive.open(f"IMAGES/IM{n:04d}", "w", force_zip64=True) as member:
                for _ in range(size // MiB):
                    member.write(zero)
    return path


def _header(frames: int, side: int) -> bytes:
    """A CT's data set without its pixels, explicit VR little endian, for a ``frames`` x ``side``² image."""
    ds = ct_study(Patient("BOMB-1", "Bomb^Deflated"), slices=1, size=16)[0]
    del ds.PixelData
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def deflated_bomb(path: Path, pixel_bytes: int = 1024 * MiB) -> Path:
    """A Part 10 file in Deflated Explicit VR Little Endian whose Pixel Data inflates to
    ``pixel_bytes`` zeros (1 GiB packs to about 1 MB), deflated as it is written."""
    side = 512
    frames = pixel_bytes // (side * side * 2)
    ds = ct_study(Patient("BOMB-1", "Bomb^Deflated"), slices=1, size=16)[0]
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    pixel_header = b"\xe0\x7f\x10\x00OW\0\0" + (frames * side * side * 2).to_bytes(4, "little")
    zero = bytes(MiB)
    with path.open("wb") as out:
        out.write(head.getvalue())
        out.write(packer.compress(_header(frames, side) + pixel_header))
        for _ in range(frames * side * side * 2 // MiB):
            out.write(packer.compress(zero))
        out.write(packer.flush())
    return path


def hard_link_iso(path: Path, links: int = 20, size: int = 50 * MiB) -> Path:
    """A CD image of one ``size`` file under ``links`` names (52 MB for twenty names of 50 MB)."""
    image = pycdlib.PyCdlib()
    image.new(interchange_level=1, joliet=3)
    image.add_fp(io.BytesIO(bytes(size)), size, "/DATA0.BIN;1", joliet_path="/data0.bin")
    for n in range(1, links):
        image.add_hard_link(iso_old_path="/DATA0.BIN;1", iso_new_path=f"/DATA{n}.BIN;1")
        image.add_hard_link(iso_old_path="/DATA0.BIN;1", joliet_new_path=f"/data{n}.bin")
    image.write(str(path))
    image.close()
    return path


def hostile_folder(folder: Path) -> Path:
    """A folder holding one CT image, a link to it, a named pipe, a link to /dev/zero, a link to a
    marked file outside the folder and one to /etc/shadow, and a link to a folder outside."""
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir(parents=True)
    (outside / "marker.dcm").write_bytes(MARKER * 100)
    folder.mkdir(parents=True)
    (folder / "IM0001.dcm").write_bytes(to_bytes(ct_study(Patient("LINKS-1", "Linked^Lee"), slices=1,
                                                          size=16)[0]))
    (folder / "same-image.dcm").symlink_to("IM0001.dcm")  # inside: followed once
    os.mkfifo(folder / "pipe.dcm")
    (folder / "zero.dcm").symlink_to("/dev/zero")
    (folder / "marker.dcm").symlink_to(outside / "marker.dcm")
    (folder / "shadow.dcm").symlink_to("/etc/shadow")
    (folder / "elsewhere").symlink_to(outside)
    return folder


# ---------------------------------------------------------------------------- a measured child
@dataclass
class Child:
    exit: int
    seconds: float
    peak_mb: float  # the child's peak resident set (ru_maxrss)
    output: str
    hung: bool = False

    def report(self) -> dict[str, object]:
        """The import report ``custodian --json`` printed, or {} when it printed none."""
        with contextlib.suppress(ValueError):
            found = json.loads(self.output)
            return found if isinstance(found, dict) else {}
        return {}


# The victim is spawned by this small launcher, which reports the victim's peak memory: a process
# forked from this one (a test process holding a vault) would count this one's memory as its own.
_LAUNCHER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a stop is for the victim; the launcher reports after it
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, setsigdef=[signal.SIGINT])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Victim:
    """A measured ``custodian`` process, started through the launcher in a process group of its own."""

    process: subprocess.Popen[bytes]
    out: io.BufferedRandom
    figure: Path
    started: float

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float) -> Child:
        hung = threading.Event()
        timer = threading.Timer(timeout, lambda: (hung.set(), self.signal(signal.SIGKILL)))
        timer.start()
        try:
            code = self.process.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - self.started
        peak = int(self.figure.read_text() or 0) / 1024 if self.figure.exists() else 0.0
        self.out.seek(0)
        return Child(code, seconds, peak, self.out.read().decode("utf-8", "replace"), hung.is_set())


class Bench:
    """A vault at a CLI home: the victims run as ``custodian`` subprocesses, checks from here."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env: VaultEnv = make_env(home)
        account = self.env.add("tech", Role.TECHNOLOGIST)
        token, _ = self.env.vault.accounts.login("tech", account.password, account.codes.next())
        self.env.vault.accounts.save_token(token)
        self.process_env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
        self.process_env["CUSTODIAN_PASSPHRASE"] = PASSPHRASE

    @contextlib.contextmanager
    def start(self, *args: str) -> Iterator[Victim]:
        with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryFile() as out:
            figure = Path(scratch) / "peak"
            process = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER, str(figure), sys.executable, "-m", "app",
                 "--home", str(self.home), *args], cwd=REPO, env=self.process_env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            yield Victim(process, out, figure, time.perf_counter())

    def run(self, *args: str, timeout: float = HANG) -> Child:
        with self.start("--json", *args) as victim:
            return victim.wait(timeout)

    def kept(self) -> tuple[int, int, int]:
        """Instances, quarantined files and the bytes of every blob in the vault."""
        core = self.env.vault._core
        (instances,), (quarantined,) = (core.query("SELECT COUNT(*) FROM instances")[0],
                                        core.query("SELECT COUNT(*) FROM quarantine")[0])
        blobs = sum(f.stat().st_size for f in (self.home / BLOB_DIR).rglob("*") if f.is_file())
        return instances, quarantined, blobs

    def refusals_audited(self) -> int:
        """Files the audit trail records as refused by a limit."""
        rows = self.env.vault._core.query("SELECT json_extract(record, '$.detail.refused') FROM audit "
                                          "WHERE json_extract(record, '$.type') = 'quarantine'")
        return sum(int(r[0] or 0) for r in rows)

    @contextlib.contextmanager
    def scp(self) -> Iterator[tuple[int, list[Child]]]:
        """``custodian scp`` listening on a free port; its measured end lands in the list."""
        self.env.vault.nodes.add(self.env.login("admin"), Node("bomber", SENDER_AE, "127.0.0.1", 104))
        port, ended = free_port(), []
        with self.start("scp", "--port", str(port), "--host", "127.0.0.1") as victim:
            try:
                wait_listening(victim.process, port, Path(os.devnull), "custodian scp", timeout=60,
                               ready=lambda: echoed(port, SENDER_AE))
                yield port, ended
            finally:
                victim.signal(signal.SIGINT)
                ended.append(victim.wait(30))

    def close(self) -> None:
        self.env.vault.close()


def send_file(port: int, path: Path) -> tuple[int | None, float]:
    """C-STORE the file at ``path`` as it is on disk (pynetdicom streams it undecoded): the status
    the SCP answered and how long it took."""
    ae = AE(ae_title=SENDER_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = HANG
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    chunked, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="CUSTODIAN")
        started = time.perf_counter()
        status = assoc.send_c_store(path) if assoc.is_established else None
        seconds = time.perf_counter() - started
        if assoc.is_established:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    return getattr(status, "Status", None), seconds


# ---------------------------------------------------------------------------- the figures
@dataclass
class Refusal:
    """One row of the results: a hostile input, what it left behind and what refusing it cost."""

    what: str
    cases: int  # files or members refused or skipped with a reason
    left: int  # what should not be there afterwards: bomb bytes kept, a marker read, a hang
    seconds: float  # time to refuse
    peak_mb: float  # the refusing process's peak memory, over a plain import's
    figure: str


def _row(what: str, child: Child, baseline: Child, left: int, figure: str) -> Refusal:
    rejected = child.report().get("rejected")
    cases = len(rejected) if isinstance(rejected, list) else 0
    return Refusal(what, cases, left + child.hung, child.seconds, child.peak_mb - baseline.peak_mb,
                   ("HUNG (killed); " if child.hung else "") + figure + f"; {_cost(child, baseline)}")


def _cost(child: Child, baseline: Child) -> str:
    return (f"{child.seconds:.1f} s, peak {child.peak_mb:.0f} MB (a plain import of one image: "
            f"{baseline.seconds:.1f} s, {baseline.peak_mb:.0f} MB)")


def _reasons(child: Child) -> dict[str, str]:
    rejected = child.report().get("rejected")
    return {Path(str(r["path"])).name: str(r["reason"]) for r in rejected} if isinstance(rejected, list) \
        else {}


def _archive_bombs(bench: Bench, work: Path, baseline: Child) -> list[Refusal]:
    rows = []
    kept = bench.kept()
    child = bench.run("import-media", str(zip_bomb(work / "bomb.zip")), "--outside-issuer", "Elsewhere")
    after = bench.kept()
    rows.append(_row("zip bomb: 8 members of 256 MiB of zeros in a 2 MB zip (import-media)", child, baseline,
                     after[2] - kept[2], f"{_count(child, 'decompression bomb')} members refused unread; "
                     f"{after[1] - kept[1]} quarantined"))
    kept = after
    child = bench.run("import-media", str(hard_link_iso(work / "links.iso")), "--outside-issuer", "Elsewhere")
    after = bench.kept()
    rows.append(_row("CD image: one 50 MB file under 20 names (hard links) in a 52 MB image (import-media)",
                     child, baseline, max(0, after[2] - kept[2] - 51 * MiB),
                     f"read once: {after[1] - kept[1]} file quarantined, "
                     f"{(after[2] - kept[2]) / MiB:.0f} MB kept"))
    return rows


def _deflate_bombs(bench: Bench, work: Path, baseline: Child) -> list[Refusal]:
    bomb = deflated_bomb(work / "deflated.dcm")
    kept = bench.kept()
    child = bench.run("import", str(bomb))
    after = bench.kept()
    rows = [_row(f"deflated data set: {bomb.stat().st_size / MiB:.1f} MB whose Pixel Data inflates to 1 GiB "
                 "(import)", child, baseline, after[2] - kept[2],
                 f"{_count(child, 'decompression bomb')} refused as it inflated; "
                 f"{after[0] - kept[0]} imported, {after[1] - kept[1]} quarantined")]
    kept = after
    with bench.scp() as (port, ended):
        status, seconds = send_file(port, bomb)
    after = bench.kept()
    scp = ended[0]
    scp.seconds = seconds
    rows.append(Refusal(
        "deflated data set over DICOM: the same file C-STOREd to custodian scp", int(status == 0xC000),
        after[2] - kept[2] + scp.hung + (after[0] != kept[0]), seconds, scp.peak_mb - baseline.peak_mb,
        f"answered {status:#06x}; {after[0] - kept[0]} imported, {after[1] - kept[1]} quarantined; the SCP: "
        f"{_cost(scp, baseline)}" if status is not None else "FAILED: no answer to the C-STORE"))
    return rows


def _special_files(bench: Bench, work: Path, baseline: Child) -> Refusal:
    folder = hostile_folder(work / "hostile")
    kept = bench.kept()
    child = bench.run("import", str(folder))
    after = bench.kept()
    reasons = _reasons(child)
    skipped = {"pipe.dcm", "zero.dcm", "marker.dcm", "shadow.dcm", "elsewhere"}
    left = (after[1] != kept[1]) + (set(reasons) != skipped) + (after[0] - kept[0] != 1)
    return _row("a folder with a named pipe, links to /dev/zero, to a file outside, to /etc/shadow and to "
                "a folder outside, and a link inside (import)", child, baseline, left,
                f"{len(reasons)} skipped with a reason; the image and its inside link imported once "
                f"({after[0] - kept[0]} instance); {after[1] - kept[1]} quarantined")


def _count(child: Child, reason: str) -> int:
    return sum(reason in why for why in _reasons(child).values())


def run_all(work: Path) -> list[Refusal]:
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work / "home")
    try:
        plain = work / "plain.dcm"
        plain.write_bytes(to_bytes(ct_study(Patient("PLAIN-1", "Plain^Paula"), slices=1, size=64)[0]))
        baseline = bench.run("import", str(plain))
        return [*_archive_bombs(bench, work, baseline), *_deflate_bombs(bench, work, baseline),
                _special_files(bench, work, baseline)]
    finally:
        bench.close()
