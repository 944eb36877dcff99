"""Instances the storage SCP acknowledged before they were indexed: a journal, and the indexer behind it.

A sender waits for each C-STORE's answer, so the index transaction (rows, manifest, audit event,
commit) and a sync per file were most of what it waited for. Here an instance is answered once its
sealed blob, with a sealed record naming it, is appended to the receiver's journal (one file in its
staging folder) and synced: one sequential write and one ``fdatasync``. An indexer thread then
indexes what arrived meanwhile under the write lock, settling it again as any import does and
syncing the staged copies before its commit. A crash after the answer leaves the journal: the next
start of the SCP (or an import) imports what it holds and the index lacks, in the sender's name,
before anything is swept, so nothing acknowledged is lost. A sender's release is answered only once
everything it sent is indexed.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

import sqlcipher3

from app.atomicfile import fsync_dir
from app.errors import CustodianError
from app.store.blobs import BlobDamaged, seal, unseal
from app.store.core import StoreCore
from app.store.staging import JOURNAL, LEASE, STAGING_DIR

JOURNAL_CONTEXT = "journal"  # the data key its records are sealed with
_AAD = b"custodian/journal"
_LENGTH = struct.Struct("<I")
JOURNAL_LIMIT = 1 << 30  # bytes a journal may grow to before a receiver waits for the indexer
# The indexer gathers what arrives for a moment before a pass (up to GATHER items or GATHER_WAIT
# seconds): one transaction and audit event for several instances costs less CPU, which the
# receiving threads share with it; nobody waits for it but a sender's release, which it serves at once.
GATHER, GATHER_WAIT = 32, 0.02
log = logging.getLogger(__name__)
W = TypeVar("W")


@dataclass(frozen=True)
class Received:
    """What the journal keeps of an acknowledged instance: enough to import it again."""

    blob_id: str
    actor: str
    label: str
    context: str  # the data key context its blob is sealed under
    aad: str  # (latin-1) the blob's associated data


class Journal:
    """Records and their sealed blobs, appended and synced with one ``fdatasync`` per batch (the
    staged copies are synced by the indexer, before its commit). It grows until everything in it
    is indexed; past ``limit`` bytes a receiver waits for that first."""

    def __init__(self, folder: Path, key: bytes, limit: int = JOURNAL_LIMIT) -> None:
        self._fd = os.open(folder / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fsync_dir(folder)  # (its name; its appends change no directory)
        self._key = key
        self.size = 0
        self.limit = limit

    def append(self, records: list[Received], blobs: list[bytes]) -> None:
        head = json.dumps([{**asdict(r), "size": len(b)} for r, b in zip(records, blobs, strict=True)])
        sealed = seal(self._key, head.encode(), _AAD)
        parts: list[bytes | bytearray] = [_LENGTH.pack(len(sealed)), sealed, *blobs]
        total, written = sum(map(len, parts)), os.writev(self._fd, parts)
        if written < total:  # (a short write: the rest, in order)
            rest = memoryview(b"".join(parts))[written:]
            while rest:
                rest = rest[os.write(self._fd, rest):]
        self.size += total
        os.fdatasync(self._fd)

    def clear(self) -> None:
        """Everything recorded is indexed: records left over would only name indexed blobs."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)


def read(folder: Path, key: bytes) -> Iterator[tuple[Received, bytes]]:
    """The records of a journal with their sealed blobs, up to a torn or damaged append (whose
    instances were not acknowledged)."""
    try:
        data = (folder / JOURNAL).read_bytes()
    except FileNotFoundError:
        return
    at = 0
    while at + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        try:
            entries = json.loads(unseal(key, data[at:at + size], _AAD))
        except (BlobDamaged, ValueError):
            return
        at += size
        for entry in entries:
            blob_size = entry.pop("size")
            if at + blob_size > len(data):
                return
            yield Received(**entry), data[at:at + blob_size]
            at += blob_size


@contextlib.contextmanager
def claimed(home: Path) -> Iterator[list[Path]]:
    """The staging folders of ended receivers holding journal records, their leases held (so no
    other process replays or sweeps them meanwhile); removed afterwards, once replayed."""
    root, held = home / STAGING_DIR, []
    try:
        for journal in root.glob(f"*/{JOURNAL}"):
            lease = journal.parent.with_name(journal.parent.name + LEASE)
            try:
                fd = os.open(lease, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live receiver's
                os.close(fd)
                continue
            held.append((journal.parent, lease, fd))
        yield [folder for folder, _, _ in held]
        for folder, _, _ in held:
            (folder / JOURNAL).unlink()  # replayed: the sweep takes the rest
    finally:
        for _, _, fd in held:
            os.close(fd)


INDEXED = "SELECT 1 FROM instances WHERE blob = ? UNION ALL SELECT 1 FROM quarantine WHERE blob = ?"


def acknowledged(core: StoreCore, folder: Path) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """What a claimed journal holds and the index lacks, in plaintext, by the actor it arrived
    under. One whose study was shredded since (its key is gone) is skipped."""
    key = core.data_key(JOURNAL_CONTEXT)
    for actor, entries in itertools.groupby(read(folder, key), key=lambda e: e[0].actor):
        found = []
        for r, sealed in entries:
            if core.query(INDEXED, (r.blob_id, r.blob_id)):
                continue
            with contextlib.suppress(CustodianError, BlobDamaged):
                found.append((r.label, unseal(core.data_key(r.context), sealed, r.aad.encode("latin-1"))))
        if found:
            yield actor, found


class Indexer(Generic[W]):
    """The receiver's indexing behind its journal: work handed over (after its records are synced)
    is indexed on a thread of its own, all that waits at once in one transaction by ``index``
    (which returns what to do once that has committed)."""

    def __init__(self, journal: Journal, core: StoreCore,
                 index: Callable[[sqlcipher3.Connection, list[W]], Callable[[], None]]) -> None:
        self._journal = journal
        self._core = core
        self._index = index
        self._queue: list[W] = []
        self._outstanding = 0  # recorded and not indexed yet
        self._flushing = 0  # callers waiting for everything to be indexed
        self._failed: BaseException | None = None
        self._stopping = False
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)
        self._thread.start()

    def hand_over(self, records: list[Received], blobs: list[bytes], work: W) -> None:
        """Record ``records`` durably, then queue ``work`` (which indexes them); raises what made
        indexing fail before (the sender is told to retry; what was recorded stays for a replay)."""
        with self._ready:
            while self._journal.size > self._journal.limit and self._outstanding and self._failed is None:
                self._ready.wait()  # (bounded disk: the indexer catches up and the journal is cleared)
            if self._failed is not None:
                raise self._failed
            self._outstanding += 1  # (before the append: no clear may drop these records)
        try:
            self._journal.append(records, blobs)
        except BaseException:
            with self._ready:
                self._outstanding -= 1
                self._ready.notify_all()
            raise
        with self._ready:
            self._queue.append(work)
            self._ready.notify_all()

    def flush(self) -> None:
        """Wait until everything handed over is indexed (or indexing failed)."""
        with self._ready:
            self._flushing += 1
            self._ready.notify_all()
            try:
                while self._outstanding and self._failed is None:
                    self._ready.wait()
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:
                    return
                until = time.monotonic() + GATHER_WAIT
                while len(self._queue) < GATHER and not (self._stopping or self._flushing) and \
                        (left := until - time.monotonic()) > 0:
                    self._ready.wait(left)
                work, self._queue = self._queue, []
            try:
                with self._core.write_lock(), self._core.transaction() as conn:
                    committed = self._index(conn, work)
                committed()
            except BaseException as exc:  # kept: the records stay in the journal for a replay
                log.error("received instances could not be indexed (%s); they stay in the journal",
                          type(exc).__name__)
                with self._ready:
                    self._failed = exc
                    self._ready.notify_all()
                return
            with self._ready:
                self._outstanding -= len(work)
                if not self._outstanding:
                    self._journal.clear()
                self._ready.notify_all()

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def close(self) -> None:
        """Index what is queued, then stop; the journal keeps whatever could not be indexed."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        self._thread.join()
        self._journal.close()
