"""Intake: files, folders, outside media and what DICOM peers send, all under one import's rules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import sqlcipher3

from app.audit.events import AuditEvent, EventType
from app.errors import BusyError
from app.media.outside import Reconcile, Survey, open_media, reconciled, survey
from app.security.roles import Action, Duty
from app.store.books import Quarantined, StudyBook
from app.store.faults import StorageFault
from app.store.importer import ImportRun, Progress, index_together, read_source
from app.store.journal import acknowledged, claimed
from app.store.limits import IntakeLimits
from app.store.patients import PatientBook
from app.store.records import ImportReport
from app.store.sources import iter_sources
from app.store.workers import Entry, InMemory, Workers
from app.vault.gate import Access, Service, duty, gated


class IntakeService(Service):
    @gated(Action.IMPORT)
    def import_paths(self, door: Access, paths: list[Path], progress: Progress | None = None) -> ImportReport:
        """Files, folders (recursively) and DICOMDIRs; bad files are quarantined with a reason."""
        limits = IntakeLimits.of(door.policy)
        sources = list(iter_sources(paths, limits))  # from metadata alone: nothing is opened yet
        entries = ((str(s.path), partial(read_source, s, limits)) for s in sources)
        return _import(door, entries, len(sources), progress)

    @gated(Action.IMPORT)
    def import_bytes(self, door: Access, items: list[tuple[str, bytes]],
                     progress: Progress | None = None) -> ImportReport:
        """Objects already in memory (generated, received, unpacked); same rules as files."""
        entries = ((label, InMemory(data)) for label, data in items)
        return _import(door, entries, len(items), progress)

    @gated(Action.IMPORT_MEDIA)
    def survey_media(self, door: Access, path: Path, passphrase: str | None = None) -> Survey:
        """What outside media holds, before anything is imported (reading it is audited)."""
        limits = IntakeLimits.of(door.policy)
        found = survey(open_media(path, passphrase, limits), limits)
        _surveyed(door, path.name, found)
        return found

    @gated(Action.IMPORT_MEDIA)
    def surveyed(self, door: Access, media: str, found: Survey) -> None:
        """A survey a client of the workstation service made of media in its hands (the service
        cannot read them): audited as :meth:`survey_media` audits its own."""
        _surveyed(door, media, found)

    @gated(Action.IMPORT_MEDIA)
    def import_media_items(self, door: Access, items: list[tuple[str, bytes]],
                           reconcile: Reconcile | None = None) -> ImportReport:
        """Files of outside media a service client read, a batch at a time: reconciled with the
        local patient here, as :meth:`import_media` does."""
        entries: list[Entry] = [(label, InMemory(data)) for label, data in items]
        return _import(door, reconciled(entries, reconcile, IntakeLimits.of(door.policy)), len(entries), None)

    @gated(Action.IMPORT_MEDIA)
    def import_media(self, door: Access, path: Path, passphrase: str | None = None,
                     reconcile: Reconcile | None = None, progress: Progress | None = None) -> ImportReport:
        """Outside media into the vault, read in memory and reconciled with the local patient; the
        import audits and quarantines as any other."""
        limits = IntakeLimits.of(door.policy)
        entries = open_media(path, passphrase, limits)
        return _import(door, reconciled(entries, reconcile, limits), len(entries), progress)

    @duty(Duty.RECEIVE)
    def receive(self, door: Access, calling_ae: str, items: list[tuple[str, bytes]],
                workers: Workers | None = None, *, at_pacs: bool = False) -> ImportReport:
        """Instances a DICOM peer sent (to the storage SCP, or back to a C-GET), under the same
        rules as an import; the audit trail names the sending AE title. ``workers`` (from
        :meth:`receiving_workers`) spares a receiver that stores instance by instance the cost of
        starting threads and a connection each time; with the storage SCP's (journaled), the
        report counts what was resolved and the indexing follows. ``at_pacs``: the PACS sent them."""
        door.actor = f"dicom:{calling_ae}"
        entries = ((label, InMemory(data)) for label, data in items)
        return _import(door, entries, len(items), None, sweep=False, workers=workers, at_pacs=at_pacs)

    @duty(Duty.RECEIVE)
    def receiving_workers(self, door: Access, *, journaled: bool = False) -> Workers:
        """Threads, a lookup connection and a staging folder for many receives; the caller closes
        them. ``journaled`` (the storage SCP's): each receive is answered once journaled."""
        return Workers.open(door.store, journaled=index_together if journaled else None)

    @duty(Duty.RECEIVE)
    def sweep_unindexed(self, door: Access) -> int:
        """What an interrupted import left behind, once what a receiver acknowledged and never
        indexed is imported from its journal; the storage SCP does this once as it starts."""
        _replay(door)
        with door.store.write_lock():
            return door.store.sweep()

    @gated(Action.IMPORT)
    def quarantined(self, door: Access) -> list[Quarantined]:
        with door.store.reading() as conn:
            return StudyBook(conn).quarantined()

    @gated(Action.RECONCILE_PATIENTS)
    def reconcile_patients(self, door: Access, study_uid: str, into_study_uid: str) -> int:
        """Declare two patient records one person: every study of ``study_uid``'s record is filed
        under ``into_study_uid``'s, whose demographics stay. An explicit, audited act of a role
        that imports (it settles what an import flagged); the number of studies moved."""
        with door.store.transaction() as conn:
            moved, kept, count = PatientBook(conn).reconcile(study_uid, into_study_uid)
            door.record(AuditEvent(
                EventType.PATIENT_RECORD, user=door.actor, studies=(study_uid, into_study_uid),
                patients=(moved, kept) if moved != kept else (kept,),
                detail={"reconciled": f"{count} stud{'y' if count == 1 else 'ies'} of the first patient "
                                      "record filed under the second, whose demographics are kept"}))
        return count


def store_made(door: Access, label: str, data: bytes) -> ImportReport:
    """One instance the workstation made (a presentation state, a key object document) stored as
    intake takes any: patient matching and quarantine apply, audited as an import."""
    return _import(door, iter([(label, InMemory(data))]), 1, None, sweep=False)


def _import(door: Access, entries: Iterator[Entry], total: int, progress: Progress | None,
            *, sweep: bool = True, workers: Workers | None = None, at_pacs: bool = False) -> ImportReport:
    """One run. Nothing is read under the write lock: the run takes it only for a moment here (to
    sweep what interrupted imports left) and then per batch, to index what it has sealed."""
    store = door.store
    if sweep:
        _replay(door)
        with store.write_lock():
            store.sweep()
    run_with = workers if workers is not None else Workers.open(store)
    try:
        return ImportRun(store, door.record, door.actor, run_with, IntakeLimits.of(door.policy),
                         at_pacs=at_pacs).run(entries, total, progress)
    except StorageFault:
        with contextlib.suppress(OSError, sqlcipher3.Error, BusyError), store.write_lock():
            store.sweep()  # give back the space the unfinished batch took
        raise
    finally:
        if workers is None:  # ours, not the caller's
            run_with.close()


def _replay(door: Access) -> None:
    """Import again what a receiver that ended without indexing it (a crash) had acknowledged,
    from its journal, in the name it arrived under. Its folder is swept afterwards."""
    caller = door.actor
    try:
        with claimed(door.store.home) as folders:
            for folder in folders:
                for actor, found in acknowledged(door.store, folder):
                    door.actor = actor
                    entries: list[Entry] = [(label, InMemory(data)) for label, data in found]
                    _import(door, iter(entries), len(entries), None, sweep=False)
    finally:
        door.actor = caller


def _surveyed(door: Access, media: str, found: Survey) -> None:
    door.record(AuditEvent(EventType.STUDY_LIST, user=door.actor,
                           patients=tuple(sorted({s.patient_id for s in found.studies})),
                           detail={"outside_media": media, "studies": len(found.studies)}))
