"""One import run: read, parse and seal outside the vault's write lock; index batch by batch under it.

Only the intake service starts a run, with the engine and the audit writer the gate handed it
(after its permission check). The main thread reads and parses (what needs the GIL) while I/O
threads hash, encrypt and write sealed blobs into the run's staging folder (app/store/staging.py)
with the GIL released; a run of one instance (a C-STORE) does it all on its own thread but for its
blob's sync, which overlaps the writing of its rows. The write lock is taken only per batch, once
all its blobs are on disk: what another import or receive stored meanwhile is settled again, the
blobs move into the blob store and the rows and their audit events are committed in one
transaction. A slow source therefore holds up no other writer, and a crash at any moment leaves
staged or unindexed blobs (swept later) and never an index row without its blob. The storage
SCP's runs hand each batch to its journal instead, and return once it holds them; its indexer
indexes them behind, in the same way (app/store/journal.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import sqlcipher3

from app.audit.events import AuditEvent, EventType, Outcome
from app.store.blobs import instance_aad, quarantine_aad, seal, unseal
from app.store.books import CacheBook
from app.store.core import QUARANTINE_CONTEXT, StoreCore, study_context
from app.store.faults import StorageFault, disk_fault
from app.store.ingest import DicomDirectory, ParsedInstance, Rejected, parse
from app.store.journal import Received
from app.store.limits import DEFAULT_LIMITS, Budget, IntakeLimits, OverLimit, Unreadable
from app.store.manifest import extended
from app.store.patients import Demographics, PatientBook
from app.store.records import ImportReport, Rejection
from app.store.rows import INSERT_INSTANCE, Batch, Pending, instance_row, sealed_under, series_study
from app.store.sources import Source, read_regular
from app.store.verdicts import Known, demographics, held, identity, verdict
from app.store.workers import Entry, Workers, read_ahead

BATCH_INSTANCES = 64
BATCH_BYTES = 128 * 1024 * 1024
LOOKUP_BATCH = 16
SHREDDED = "its study was shredded while this import ran: not imported"
OTHER_STUDYS_SERIES = "its Series Instance UID is already cached in another study"
QUARANTINE_FULL = "not kept for inspection: the quarantine is full (site policy quarantine_max_mb)"

Progress = Callable[[int, int], None]


def read_source(source: Source, limits: IntakeLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a file the walk found, if it is still that regular file (Unreadable, or
    OverLimit, says why not)."""
    if source.problem:
        raise Unreadable(source.problem)
    return read_regular(source.real or source.path, limits, source.identity)


class ImportRun:
    """Reads and parses on the calling thread; seals and stages on the I/O threads; indexes each
    batch on the committer thread, under the write lock, while the next batch is being read, and
    the last one on the calling thread."""

    def __init__(self, core: StoreCore, record: Callable[[AuditEvent], None], actor: str,
                 workers: Workers, limits: IntakeLimits = DEFAULT_LIMITS, *, at_pacs: bool = False) -> None:
        """``at_pacs``: the PACS sent these (so its studies may leave the cache again)."""
        self._core = core
        self._at_pacs = at_pacs
        self._indexer = workers.indexer  # a receiver's: batches are journaled, then indexed behind it
        self._record = record  # the gate's audit writer: inside a transaction, with it
        self._actor = actor
        self._workers = workers
        self._pool = workers.io
        self._lookup = workers.lookup
        self._staging = workers.staging
        self.report = ImportReport()
        self._batch = Batch()
        self._in_flight: dict[str, Pending] = {}  # instances of this run, by SOP Instance UID
        self._study_patient: dict[str, Demographics] = {}  # study uid -> whose study it is
        self._parsed: list[tuple[str, bytes, ParsedInstance]] = []  # awaiting _resolve
        self._committing: Future[None] | None = None
        self._writes: list[Future[str]] = []  # every blob write this run started
        self._staged: set[str] = set()  # blobs of this run staged and not yet indexed
        self._late_duplicates = 0  # found by the committer: stored meanwhile by another writer
        self._limits = limits
        self._budget = Budget(limits)
        self._refused: dict[str, int] = {}  # files refused by a limit, by reason: audited at the end
        self._refusing = threading.Lock()  # (the committer refuses too, when the quarantine filled up)
        self._quarantine_room: int | None = None  # bytes the quarantine may still take (read when needed)
        self._quarantined: set[str] = set()  # SHA-256 of what this run put there: each kept once
        # A run of one instance (a C-STORE: its sender waits for each step) seals and stages its blob
        # on its own thread (no thread to wake) and syncs it once it is in the blob store, so one
        # journal commit of the file system makes both its bytes and its new name durable and the
        # folder's sync finds nothing left to do; an I/O thread does that while the rows are written.
        # A batch syncs each blob as it is written instead, while the next files are parsed.
        self._sync_late = False
        self._inline = False  # a run of one instance: sealed and staged on the calling thread

    def run(self, entries: Iterable[Entry], total: int, progress: Progress | None) -> ImportReport:
        try:
            with self._workers.busy:
                self._inline = total == 1
                # Journaled, the journal syncs the blobs for the sender's answer: their staged copies
                # are synced by the indexer, before its commit, as a run of one does its blob.
                self._sync_late = self._inline or self._indexer is not None
                return self._run(entries, total, progress)
        except BaseException as exc:  # a fault, or a cancel (an exception from ``progress``)
            self._stop_writing()
            why = disk_fault(exc) if isinstance(exc, OSError | sqlcipher3.OperationalError | StorageFault) \
                else None
            if why is None:
                raise
            raise StorageFault(f"The import stopped after storing {self.report.imported} instances",
                               why) from None

    def _stop_writing(self) -> None:
        """After a failure or a cancel: let the batch handed to the committer finish (or fail),
        drop the blob writes not yet begun, wait for the running ones, and remove what this run
        staged and never indexed."""
        if self._committing is not None:
            with contextlib.suppress(Exception):
                self._committing.result()
        for future in self._writes:
            future.cancel()
        wait(self._writes)
        for blob_id in self._staged:
            self._staging.discard(blob_id)
        self._staged.clear()

    def _run(self, entries: Iterable[Entry], total: int, progress: Progress | None) -> ImportReport:
        committer, report = self._workers.committer, self.report  # (a journaled run: late findings elsewhere)
        for done, (label, read) in enumerate(read_ahead(entries, self._workers.readers), 1):
            try:
                self._ingest(label, read())
            except OverLimit as exc:
                self._refuse(label, str(exc))
            except Unreadable as exc:
                self.report.rejected.append(Rejection(label, str(exc)))
            if len(self._batch.items) >= BATCH_INSTANCES or self._batch.nbytes >= BATCH_BYTES:
                self._commit(committer)
            if progress:
                progress(done, total)
        self._resolve()
        self._commit(None)
        report.duplicates += self._late_duplicates
        if self._refused:  # the small record a refused bomb leaves: how many, and why
            self._record(AuditEvent(
                EventType.QUARANTINE, Outcome.MINOR_FAILURE, user=self._actor,
                detail={"refused": sum(self._refused.values()), "why": sorted(self._refused)}))
        return report

    def _refuse(self, label: str, reason: str) -> None:
        with self._refusing:
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
        """Decide new / duplicate / conflict for the parsed files with one index lookup (settled
        again under the write lock as their batch is committed)."""
        parsed_files, self._parsed = self._parsed, []
        if not parsed_files:
            return
        stored = held(self._lookup, [p.sop_uid for _, _, p in parsed_files])
        for label, data, parsed in parsed_files:
            known = self._known(parsed.sop_uid, stored)
            digest = hashlib.sha256(data).hexdigest() if known is not None else ""
            why = verdict(parsed, digest, known, self._owner(parsed))
            if why is None:
                dek = self._core.kept_data_key(study_context(parsed.study_uid))
                # The record keeps the metadata only; the bytes go to the writer, then are dropped.
                self._in_flight[parsed.sop_uid] = self._write(
                    dek, instance_aad(parsed.sop_uid), data, parsed=replace(parsed, data=b""), source=label)
            elif why:
                self._quarantine(label, data, why)
            else:
                self.report.duplicates += 1

    def _known(self, sop_uid: str, stored: dict[str, Known]) -> Known | None:
        """What is stored under ``sop_uid``, or what this run (or an earlier, journaled one not
        indexed yet) is storing under it."""
        pending = self._in_flight.get(sop_uid)
        if pending is not None and pending.parsed is not None:
            first = pending.parsed
            return (pending.future.result(), first.transfer_syntax, identity(first))
        return self._workers.unindexed.known.get(sop_uid) or stored.get(sop_uid)

    def _owner(self, parsed: ParsedInstance) -> Demographics:
        """Whose study ``parsed`` belongs to: the patient it is filed under, or (a new study) the
        patient its first instance in this run names."""
        uid = parsed.study_uid
        owner = self._study_patient.get(uid) or self._workers.unindexed.owners.get(uid)
        if owner is None:
            filed = PatientBook(self._lookup).of_study(parsed.study_uid)
            owner = self._study_patient[parsed.study_uid] = filed[1] if filed else demographics(parsed)
        return owner

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
            self._refuse(source, f"{reason}; {QUARANTINE_FULL}")
            return
        self._quarantine_room -= len(data)
        self._quarantined.add(digest)
        self.report.rejected.append(Rejection(source, reason))
        self._write(self._core.kept_data_key(QUARANTINE_CONTEXT), None, data, source=source, reason=reason)

    def _write(self, dek: bytes, aad: bytes | None, data: bytes, **fields: object) -> Pending:
        batch = self._batch
        # A batch's blobs share one folder, so the batch costs one directory fsync.
        blob_id = batch.folder + secrets.token_hex(15)
        self._staged.add(blob_id)
        aad = aad or quarantine_aad(blob_id)
        if self._inline:  # one instance: hashed on an I/O thread while this one seals and stages it
            future = self._pool.submit(_sha256, data)
            self._writes.append(future)
            self._staging.write(blob_id, seal(dek, data, aad), sync=not self._sync_late)
        else:
            future = self._pool.submit(self._persist, blob_id, dek, aad, data)
            self._writes.append(future)
        item = Pending(blob_id, future, size=len(data), **fields)  # type: ignore[arg-type]
        batch.items.append(item)
        batch.nbytes += len(data)
        return item

    def _persist(self, blob_id: str, dek: bytes, aad: bytes, plaintext: bytes) -> str:
        """On an I/O thread: hashing, AES-GCM and the durable write all release the GIL."""
        sealed = seal(dek, plaintext, aad)
        digest = _sha256(plaintext)
        self._staging.write(blob_id, sealed, sync=not self._sync_late)
        return digest

    # ------------------------------------------------------------------ one batch
    def _commit(self, committer: ThreadPoolExecutor | None) -> None:
        """Hand the batch to the committer; at most one batch waits to be indexed at a time. The
        run's last batch (no ``committer``) is indexed on this thread, which has nothing left to do."""
        batch, self._batch = self._batch, Batch()
        if self._indexer is not None:
            if batch.items:
                self._hand_over(batch)
            return
        if not batch.items and committer is not None:
            return
        if self._committing is not None:
            self._committing.result()
            self._committing = None
        if committer is not None:
            self._committing = committer.submit(self._index, batch)
        elif batch.items:
            self._index(batch)

    def _index(self, batch: Batch) -> None:
        """Committer thread (or the run's, for its last batch): once every blob of the batch is
        staged, index it under the write lock in one transaction."""
        digests = [item.future.result() for item in batch.items]
        with self._core.write_lock(), self._core.transaction() as conn:
            instances, studies = self._index_into(conn, batch, digests)
        self.report.imported += instances
        self.report.studies.update(studies)

    def _index_into(self, conn: sqlcipher3.Connection, batch: Batch,
                    digests: list[str]) -> tuple[int, dict[str, str]]:
        """Settle the batch against what the index holds now, move its blobs into the blob store
        and index them with their audit events, in the caller's transaction, which commits only
        once the blobs and their folders are synced."""
        core = self._core
        kept = self._settled(conn, batch.items, digests)
        adopted = [item.blob_id for item, _ in kept]
        folders = self._staging.adopt(adopted, core.blobs)
        if self._sync_late:  # the blobs are synced on the I/O threads while the rows are written
            syncs = [self._pool.submit(core.blobs.sync, blob_id) for blob_id in adopted]
            try:
                instances, studies = self._fill(conn, kept)
            finally:
                wait(syncs)
            for sync in syncs:
                sync.result()  # (a failure fails the commit)
            core.blobs.sync_dirs(folders)  # then their new names (one journal commit makes both durable)
        else:  # (the blobs were synced as they were staged)
            core.blobs.sync_dirs(folders)
            instances, studies = self._fill(conn, kept)
        if self._at_pacs:
            CacheBook(conn).at_pacs(studies)
        self._staged.difference_update([item.blob_id for item in batch.items] + [i.blob_id for i, _ in kept])
        return instances, studies

    def _hand_over(self, batch: Batch) -> None:
        """A receiver's batch, once its blobs are staged and synced: journaled (the sender may be
        answered), then indexed by the indexer. Counted now as it was resolved; what settling it
        finds later (another writer's copy meanwhile) is audited, and the sender was answered."""
        digests = [item.future.result() for item in batch.items]
        records = [Received(item.blob_id, self._actor, item.source, *sealed_under(item.blob_id, item.parsed))
                   for item in batch.items]
        judged = {p.sop_uid: (digest, p.transfer_syntax, identity(p))
                  for item, digest in zip(batch.items, digests, strict=True) if (p := item.parsed)}
        owners = {p.study_uid: self._owner(p) for item in batch.items if (p := item.parsed) is not None}
        blobs = [self._staging.read(item.blob_id) for item in batch.items]  # (from the page cache)
        assert self._indexer is not None
        self._indexer.hand_over(records, blobs, Deferred(self, batch, digests, judged, owners))
        self._workers.unindexed.known.update(judged)  # (until the commit that indexes them)
        self._workers.unindexed.owners.update(owners)
        self._staged.difference_update(item.blob_id for item in batch.items)  # (the indexer's, or a replay's)
        for item in batch.items:
            if item.parsed is not None:
                self.report.imported += 1
                self.report.studies.add(item.parsed.study_uid)

    def _fill(self, conn: sqlcipher3.Connection,
              kept: list[tuple[Pending, str]]) -> tuple[int, dict[str, str]]:
        """The rows of a batch's kept items and their audit events, in the committing transaction:
        how many instances, and the studies (with their patients' references for the trail)."""
        now = time.time()
        studies: dict[str, str] = {}
        added: dict[str, list[tuple[str, str]]] = {}  # study -> (SOP Instance UID, SHA-256) added
        quarantined = []
        instances = []
        for item, digest in kept:
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
            instances.append(instance_row(p, item.blob_id, item.size, digest, now))
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
        return len(instances), studies

    def _settled(self, conn: sqlcipher3.Connection, items: list[Pending],
                 digests: list[str]) -> list[tuple[Pending, str]]:
        """Under the write lock: the items of a batch that go into the index as it holds now. An
        instance another writer stored meanwhile is a duplicate (its blob dropped) or a conflict,
        as is one whose study was meanwhile filed under another patient (both quarantined); one
        whose study was shredded meanwhile is refused; quarantined files take only the room left."""
        now_held = held(conn, [item.parsed.sop_uid for item in items if item.parsed is not None])
        studies: dict[str, tuple[Demographics | None, bool]] = {}  # uid -> (filed under, key kept)
        series: dict[str, str] = {}  # series UID -> the study it is held under
        room: int | None = None  # what the quarantine may still take: summed only if the batch puts any there
        kept = []
        for item, digest in zip(items, digests, strict=True):
            if (p := item.parsed) is not None:
                if p.study_uid not in studies:
                    filed = PatientBook(conn).of_study(p.study_uid)
                    studies[p.study_uid] = (filed[1] if filed else None, conn.execute(
                        "SELECT 1 FROM data_keys WHERE context = ?", (study_context(p.study_uid),)
                    ).fetchone() is not None)
                owner, keyed = studies[p.study_uid]
                why = verdict(p, digest, now_held.get(p.sop_uid), owner) if keyed else SHREDDED
                if why is None and series_study(conn, series, p) != p.study_uid:
                    why = OTHER_STUDYS_SERIES  # (else its image would be shown in that study's series)
                if why in ("", SHREDDED):
                    self._staging.discard(item.blob_id)
                    if why:
                        self.report.rejected.append(Rejection(item.source, why))
                    else:
                        self._late_duplicates += 1
                    continue
                if why is not None:
                    item = self._requarantine(item, p, why)
            if item.parsed is None:
                if room is None:
                    (used,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM quarantine").fetchone()
                    room = self._limits.quarantine_bytes - used
                if item.size > room:
                    self._staging.discard(item.blob_id)  # (another import filled it meanwhile)
                    self.report.rejected.remove(Rejection(item.source, item.reason))
                    self._refuse(item.source, f"{item.reason}; {QUARANTINE_FULL}")
                    continue
                room -= item.size
            kept.append((item, digest))
        return kept

    def _requarantine(self, item: Pending, p: ParsedInstance, why: str) -> Pending:
        """An instance found at commit to conflict with what another writer stored meanwhile, sealed
        again under the quarantine's key as :meth:`_quarantine` would have kept it (inside the
        committing transaction, which also keeps the quarantine's key if it is new)."""
        core = self._core
        data = unseal(core.data_key(study_context(p.study_uid)), self._staging.read(item.blob_id),
                      instance_aad(p.sop_uid))
        if self._indexer is None:  # (journaled, it stays until the commit: a crash before it replays it)
            self._staging.discard(item.blob_id)
        new: dict[str, bytes] = {}
        dek = core.data_key(QUARANTINE_CONTEXT, new)
        if new:
            core.store_data_key(QUARANTINE_CONTEXT, dek)
        blob_id = item.blob_id[:2] + secrets.token_hex(15)  # (in the batch's folder)
        self._staged.add(blob_id)
        self._staging.write(blob_id, seal(dek, data, quarantine_aad(blob_id)), sync=not self._sync_late)
        self.report.rejected.append(Rejection(item.source, why))
        return Pending(blob_id, item.future, source=item.source, reason=why, size=item.size)

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


@dataclass
class Deferred:
    """A journaled batch waiting for the indexer, as the run that resolved it handed it over."""

    run: ImportRun
    batch: Batch
    digests: list[str]
    judged: dict[str, Known]  # what the batch will add to the index, by SOP Instance UID
    owners: dict[str, Demographics]


def index_together(conn: sqlcipher3.Connection, waiting: list[Deferred]) -> Callable[[], None]:
    """The indexer's pass over what waits, in its transaction: the batches of one sender (and
    source) indexed as one, with one audit event, as a batch of one import is. The run's report
    was returned already: what settling finds now goes to the trail only."""
    for _, group in itertools.groupby(waiting, key=lambda d: (d.run._actor, d.run._at_pacs)):
        together = list(group)
        run = together[-1].run
        run.report = ImportReport()
        merged = Batch(items=[item for d in together for item in d.batch.items])
        run._index_into(conn, merged, [digest for d in together for digest in d.digests])

    def committed() -> None:
        for d in waiting:
            d.run._workers.unindexed.forget(d.judged, d.owners)
    return committed


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
