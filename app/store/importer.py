"""One import run: parse, seal and durably write blobs, then index them batch by batch.

Only the intake service starts a run, with the engine and the audit writer the gate handed it
(after its permission check, under the write lock). The work is split so the main thread does
what needs the GIL (parsing) while I/O threads hash, encrypt and write with the GIL released; a
batch is indexed in one transaction only after all its blobs are on disk, so a crash at any
moment leaves unindexed blobs (swept later) and never an index row without its blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlcipher3

from app.audit.events import AuditEvent, EventType, Outcome
from app.store.blobs import instance_aad, quarantine_aad, seal
from app.store.core import QUARANTINE_CONTEXT, StoreCore, study_context
from app.store.faults import StorageFault, disk_fault
from app.store.ingest import DicomDirectory, ParsedInstance, Rejected, parse
from app.store.limits import DEFAULT_LIMITS, Budget, IntakeLimits, OverLimit, Unreadable
from app.store.manifest import extended
from app.store.patients import Demographics, PatientBook
from app.store.records import ImportReport, Rejection
from app.store.sources import Source, read_regular

BATCH_INSTANCES = 64
BATCH_BYTES = 128 * 1024 * 1024
IO_THREADS = 4
READ_AHEAD = 8
LOOKUP_BATCH = 16

Progress = Callable[[int, int], None]
Entry = tuple[str, Callable[[], bytes]]


def read_source(source: Source, limits: IntakeLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a file the walk found, if it is still that regular file (Unreadable, or
    OverLimit, says why not)."""
    if source.problem:
        raise Unreadable(source.problem)
    return read_regular(source.real or source.path, limits, source.identity)


@dataclass
class _Pending:
    """One instance or quarantined file whose blob an I/O thread is writing."""

    blob_id: str
    future: Future[tuple[str, Path]]  # -> (sha256 of the plaintext, folder to fsync)
    parsed: ParsedInstance | None = None
    source: str = ""
    reason: str = ""
    size: int = 0


@dataclass
class _Batch:
    folder: str = field(default_factory=lambda: secrets.token_hex(1))
    items: list[_Pending] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)  # contexts whose DEK this batch introduces
    nbytes: int = 0


def _read_ahead(entries: Iterable[Entry], pool: ThreadPoolExecutor) -> Iterator[tuple[str, Future[bytes]]]:
    """Read the next few files on threads while the current one is parsed (bounded memory)."""
    window: deque[tuple[str, Future[bytes]]] = deque()
    for label, read in entries:
        window.append((label, pool.submit(read)))
        if len(window) > READ_AHEAD:
            yield window.popleft()
    yield from window


@dataclass
class Workers:
    """The threads and the lookup connection a run uses; one set per run, or kept open by a
    receiver that imports many small runs (the storage SCP), so none pays for starting them."""

    lookup: sqlcipher3.Connection  # its own connection: WAL lets it read while the committer writes
    io: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(IO_THREADS))
    readers: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))
    committer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))

    def close(self) -> None:
        for pool in (self.io, self.readers, self.committer):
            pool.shutdown()
        self.lookup.close()


class ImportRun:
    """Reads and parses on the calling thread; seals and writes on the I/O threads; indexes each
    batch on the committer thread while the next batch is being read."""

    def __init__(self, core: StoreCore, record: Callable[[AuditEvent], None], actor: str,
                 workers: Workers, limits: IntakeLimits = DEFAULT_LIMITS) -> None:
        self._core = core
        self._record = record  # the gate's audit writer: inside a transaction, with it
        self._actor = actor
        self._workers = workers
        self._pool = workers.io
        self._lookup = workers.lookup
        self.report = ImportReport()
        self._batch = _Batch()
        self._new_keys: dict[str, bytes] = {}  # DEKs made by this run, committed with their batch
        self._in_flight: dict[str, _Pending] = {}  # instances of this run, by SOP Instance UID
        self._study_patient: dict[str, Demographics] = {}  # study uid -> whose study it is
        self._parsed: list[tuple[str, bytes, ParsedInstance]] = []  # awaiting _resolve
        self._committing: Future[None] | None = None
        self._writes: list[Future[tuple[str, Path]]] = []  # every blob write this run started
        self._limits = limits
        self._budget = Budget(limits)
        self._refused: dict[str, int] = {}  # files refused by a limit, by reason: audited at the end
        self._quarantine_room: int | None = None  # bytes the quarantine may still take (read when needed)
        self._quarantined: set[str] = set()  # SHA-256 of what this run put there: each kept once

    def run(self, entries: Iterable[Entry], total: int, progress: Progress | None) -> ImportReport:
        try:
            return self._run(entries, total, progress)
        except (OSError, sqlcipher3.OperationalError, StorageFault) as exc:
            why = disk_fault(exc)
            if why is None:
                raise
            self._stop_writing()
            raise StorageFault(f"The import stopped after storing {self.report.imported} instances",
                               why) from None

    def _stop_writing(self) -> None:
        """After a failure: drop the blob writes not yet begun and wait for the running ones and
        the batch being indexed, so the sweep that follows finds every blob this run wrote."""
        for future in self._writes:
            future.cancel()
        wait(self._writes)
        if self._committing is not None:
            with contextlib.suppress(Exception):
                self._committing.result()

    def _run(self, entries: Iterable[Entry], total: int, progress: Progress | None) -> ImportReport:
        committer = self._workers.committer
        for done, (label, data) in enumerate(_read_ahead(entries, self._workers.readers), 1):
            try:
                self._ingest(label, data.result())
            except OverLimit as exc:
                self._refuse(label, str(exc))
            except Unreadable as exc:
                self.report.rejected.append(Rejection(label, str(exc)))
            if len(self._batch.items) >= BATCH_INSTANCES or self._batch.nbytes >= BATCH_BYTES:
                self._commit(committer)
            if progress:
                progress(done, total)
        self._resolve()
        self._commit(committer)
        if self._committing is not None:
            self._committing.result()
        if self._refused:  # the small record a refused bomb leaves: how many, and why
            self._record(AuditEvent(
                EventType.QUARANTINE, Outcome.MINOR_FAILURE, user=self._actor,
                detail={"refused": sum(self._refused.values()), "why": sorted(self._refused)}))
        return self.report

    def _refuse(self, label: str, reason: str) -> None:
        self.report.rejected.append(Rejection(label, reason))
        self._refused[reason] = self._refused.get(reason, 0) + 1

    # ------------------------------------------------------------------ one file
    def _ingest(self, label: str, data: bytes) -> None:
        self._budget.take(len(data))
        try:
            parsed = parse(data, self._limits)
        except DicomDirectory:
            return  # a directory record file, not an instance: the files it lists come themselves
        except Rejected as exc:
            self._quarantine(label, data, str(exc))
            return
        self._parsed.append((label, data, parsed))
        if len(self._parsed) >= LOOKUP_BATCH or sum(len(d) for _, d, _ in self._parsed) >= BATCH_BYTES:
            self._resolve()

    def _resolve(self) -> None:
        """Decide new / duplicate / conflict for the parsed files with one index lookup."""
        parsed_files, self._parsed = self._parsed, []
        if not parsed_files:
            return
        uids = [p.sop_uid for _, _, p in parsed_files]
        rows = self._lookup.execute(
            f"SELECT sop_uid, sha256, transfer_syntax, {_IDENTITY} FROM instances "
            f"WHERE sop_uid IN ({','.join('?' * len(uids))})", uids).fetchall()
        stored = {uid: (digest, syntax, tuple(identity)) for uid, digest, syntax, *identity in rows}
        for label, data, parsed in parsed_files:
            pending = self._in_flight.get(parsed.sop_uid)
            known: tuple[str, str, tuple[object, ...]] | None
            if pending is not None and pending.parsed is not None:
                first = pending.parsed
                known = (pending.future.result()[0], first.transfer_syntax, _identity(first))
            else:
                known = stored.get(parsed.sop_uid)
            if known is None:
                why = self._other_patient(parsed)
                if why:
                    self._quarantine(label, data, why)
                    continue
                dek = self._data_key(study_context(parsed.study_uid))
                # The record keeps the metadata only; the bytes go to the writer, then are dropped.
                self._in_flight[parsed.sop_uid] = self._write(
                    dek, instance_aad(parsed.sop_uid), data, parsed=replace(parsed, data=b""))
            elif hashlib.sha256(data).hexdigest() == known[0]:
                self.report.duplicates += 1
            elif parsed.transfer_syntax == known[1] or _identity(parsed) != known[2]:
                self._quarantine(label, data, "a different object with the same SOP Instance UID "
                                 "is already stored")
            elif why := self._other_patient(parsed):
                self._quarantine(label, data, why)
            else:  # the same instance in another transfer syntax: the copy stored first stays
                self.report.duplicates += 1

    def _data_key(self, context: str) -> bytes:
        made = context in self._new_keys
        dek = self._core.data_key(context, self._new_keys)
        if not made and context in self._new_keys:
            self._batch.new_keys.append(context)
        return dek

    def _other_patient(self, parsed: ParsedInstance) -> str:
        """Why a new instance cannot join its study (the study is filed under another patient:
        a different Patient ID, or the same one with another name or birth date), or ''."""
        own = demographics(parsed)
        owner = self._study_patient.get(parsed.study_uid)
        if owner is None:
            filed = PatientBook(self._lookup).of_study(parsed.study_uid)
            owner = self._study_patient[parsed.study_uid] = filed[1] if filed else own
        if (owner.patient_id, owner.issuer) != (own.patient_id, own.issuer):
            return "its study is already cached under a different Patient ID"
        if not owner.same_person(own):
            return "its study is already cached under the same Patient ID with another name or birth date"
        return ""

    def _quarantine(self, source: str, data: bytes, reason: str) -> None:
        """Keep a file that cannot be cached for inspection, within the quarantine's room, and once
        (the same bytes under many names, as hard links on a CD image, take the room of one)."""
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._quarantined:
            self.report.rejected.append(Rejection(source, f"{reason} (the same bytes as a file kept "
                                                          "in the quarantine by this import)"))
            return
        if self._quarantine_room is None:
            (kept,) = self._lookup.execute("SELECT COALESCE(SUM(size), 0) FROM quarantine").fetchone()
            self._quarantine_room = self._limits.quarantine_bytes - kept
        if len(data) > self._quarantine_room:
            self._refuse(source, f"{reason}; not kept for inspection: the quarantine is full (site policy "
                                 "quarantine_max_mb)")
            return
        self._quarantine_room -= len(data)
        self._quarantined.add(digest)
        self.report.rejected.append(Rejection(source, reason))
        self._write(self._data_key(QUARANTINE_CONTEXT), None, data, source=source, reason=reason)

    def _write(self, dek: bytes, aad: bytes | None, data: bytes, **fields: object) -> _Pending:
        batch = self._batch
        # A batch's blobs share one folder, so the batch costs one directory fsync.
        blob_id = batch.folder + secrets.token_hex(15)
        future = self._pool.submit(self._persist, blob_id, dek, aad or quarantine_aad(blob_id), data)
        self._writes.append(future)
        item = _Pending(blob_id, future, size=len(data), **fields)  # type: ignore[arg-type]
        batch.items.append(item)
        batch.nbytes += len(data)
        return item

    def _persist(self, blob_id: str, dek: bytes, aad: bytes, plaintext: bytes) -> tuple[str, Path]:
        """On an I/O thread: hashing, AES-GCM and the durable write all release the GIL."""
        sealed = seal(dek, plaintext, aad)
        digest = hashlib.sha256(plaintext).hexdigest()
        return digest, self._core.blobs.write(blob_id, sealed)

    # ------------------------------------------------------------------ one batch
    def _commit(self, committer: ThreadPoolExecutor) -> None:
        """Hand the batch to the committer; at most one batch waits to be indexed at a time."""
        batch, self._batch = self._batch, _Batch()
        if not batch.items:
            return
        if self._committing is not None:
            self._committing.result()
        self._committing = committer.submit(self._index, batch)

    def _index(self, batch: _Batch) -> None:
        """Committer thread: once every blob of the batch is durable, index them in one transaction."""
        results = [item.future.result() for item in batch.items]
        self._core.blobs.sync_dirs({folder for _, folder in results})
        core, now = self._core, time.time()
        studies: dict[str, str] = {}
        added: dict[str, list[tuple[str, str]]] = {}  # study -> (SOP Instance UID, SHA-256) added
        quarantined = []
        instances = []
        with core.transaction() as conn:
            for context in batch.new_keys:
                core.store_data_key(context, self._new_keys[context])
            for item, (digest, _) in zip(batch.items, results, strict=True):
                p = item.parsed
                if p is None:
                    quarantined.append((item.blob_id, item.source, item.reason, item.size, digest, now))
                    continue
                if p.study_uid not in studies:
                    studies[p.study_uid] = self._insert_study(p, now)
                conn.execute(
                    "INSERT OR IGNORE INTO series (uid, study_uid, modality, number, description, "
                    "body_part, frame_of_reference) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (p.series_uid, p.study_uid, p.modality, p.series_number, p.series_description,
                     p.body_part, p.frame_of_reference))
                instances.append(_instance_row(p, item.blob_id, item.size, digest, now))
                added.setdefault(p.study_uid, []).append((p.sop_uid, digest))
            conn.executemany(INSERT_INSTANCE, instances)
            conn.executemany("INSERT INTO quarantine (blob, source, reason, size, sha256, at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", quarantined)
            for study_uid, pairs in added.items():
                (stored,) = conn.execute("SELECT manifest FROM studies WHERE uid = ?",
                                         (study_uid,)).fetchone()
                conn.execute("UPDATE studies SET manifest = ? WHERE uid = ?",
                             (extended(stored, pairs), study_uid))
            if studies:
                self._record(AuditEvent(
                    EventType.IMPORT, user=self._actor, studies=tuple(studies),
                    patients=tuple(sorted({ref for ref in studies.values() if ref})),
                    detail={"instances": len(instances)}))
            if quarantined:
                self._record(AuditEvent(EventType.QUARANTINE, Outcome.MINOR_FAILURE,
                                              user=self._actor, detail={"files": len(quarantined)}))
        core.remember_keys({context: self._new_keys[context] for context in batch.new_keys})
        self.report.imported += len(instances)
        self.report.studies.update(studies)

    def _insert_study(self, p: ParsedInstance, now: float) -> str:
        """File a study new to the index under its patient's record (a conflict is flagged, never
        merged); the patient's reference for the audit trail."""
        book = PatientBook(self._core.conn)
        filed = book.of_study(p.study_uid)
        if filed is not None:
            return filed[2]
        own = demographics(p)
        filing = book.file(p.study_uid, own)
        self._core.conn.execute(
            "INSERT INTO studies (uid, patient, key_id, study_date, study_time, accession, "
            "description, referring, imported_at) VALUES (?, ?, "
            "(SELECT id FROM data_keys WHERE context = ?), ?, ?, ?, ?, ?, ?)",
            (p.study_uid, filing.key, study_context(p.study_uid), p.study_date,
             p.study_time, p.accession, p.study_description, p.referring, now))
        if filing.conflict is not None:
            self.report.warnings.append(
                f"Patient ID {p.patient_id} is already cached for {filing.conflict.describe()}; study "
                f"{p.study_uid} names {own.describe()}. It was filed as a separate patient: check the two "
                "and reconcile them if they are the same person ('custodian patient reconcile').")
            self._record(AuditEvent(
                EventType.PATIENT_RECORD, Outcome.MINOR_FAILURE, user=self._actor, studies=(p.study_uid,),
                patients=(filing.reference,),
                detail={"why": "the same Patient ID arrived with another name or birth date; filed as a "
                               "separate patient record"}))
        return filing.reference


# What one instance keeps in any transfer syntax: a copy in another syntax that agrees on all of it
# is a duplicate (its bytes cannot match); another object under the same SOP Instance UID (another
# series, slice or pixel matrix, as from a modality that reuses UIDs) is a conflict to quarantine.
# In the same syntax only identical bytes are a duplicate, as before.
_IDENTITY = ("sop_class, study_uid, series_uid, number, position, rows, columns, frames, samples, "
             "bits_allocated")


def _identity(p: ParsedInstance) -> tuple[object, ...]:
    """The values of the _IDENTITY columns, as indexed."""
    return (p.sop_class, p.study_uid, p.series_uid, p.instance_number, p.position, p.rows, p.columns,
            p.frames, p.samples, p.bits_allocated)


def demographics(p: ParsedInstance) -> Demographics:
    return Demographics(p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex)


INSERT_INSTANCE = (
    "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class, number, blob, size, sha256, "
    "transfer_syntax, rows, columns, frames, samples, bits_allocated, bits_stored, "
    "pixel_representation, photometric, rescale_slope, rescale_intercept, window_center, "
    "window_width, pixel_spacing, position, orientation, pixel_offset, needs_header, frame_positions, "
    "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _instance_row(p: ParsedInstance, blob_id: str, size: int, digest: str,
                  now: float) -> tuple[object, ...]:
    return (p.sop_uid, p.series_uid, p.study_uid, p.sop_class, p.instance_number, blob_id,
            size, digest, p.transfer_syntax, p.rows, p.columns, p.frames, p.samples,
            p.bits_allocated, p.bits_stored, p.pixel_representation, p.photometric,
            p.rescale_slope, p.rescale_intercept, p.window_center, p.window_width,
            p.pixel_spacing, p.position, p.orientation, p.pixel_offset, p.needs_header,
            p.frame_positions, now)

