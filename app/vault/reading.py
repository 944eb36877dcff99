"""Reading: the study list, series, images, thumbnails, a reader's measurements, break-glass."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError, NotPermitted, UsageError
from app.imaging.thumbnail import THUMBNAIL_SIZE
from app.security.roles import Action, Field
from app.security.sessions import Session
from app.store.books import MeasurementBook, StoredInstance, StudyBook
from app.store.patients import PatientBook
from app.store.records import SeriesSummary, StudySummary
from app.vault.accounts import AccountService
from app.vault.gate import Access, Gate, Service, gated

if TYPE_CHECKING:  # (NumPy, pydicom and the decoders load when images are read: see signature_types)
    import numpy as np

    from app.imaging.measure import Measurement
    from app.imaging.pixels import Decoded, FrameInfo
    from app.imaging.report import Report
    from app.imaging.series import SeriesFrames, SeriesImages
    from app.imaging.tags import TagRow


class ReadingService(Service):
    def __init__(self, gate: Gate, accounts: AccountService) -> None:
        super().__init__(gate)
        self._accounts = accounts
        self._open: dict[str, set[str]] = {}  # studies each session opened (by its token's hash)

    @gated(Action.LIST_STUDIES)
    def studies(self, door: Access, patient_id: str | None = None) -> list[StudySummary]:
        """The cached studies, with only the demographics the role may see (minimum necessary)."""
        with door.store.reading() as conn:
            listed = StudyBook(conn).listed(patient_id)
        granted = door.granted()
        result = []
        refs = set()
        for study in listed:
            hidden = bool(study.restricted) and study.key not in granted
            result.append(door.shown(study.summary(), restricted=hidden))
            if not hidden and Field.PATIENT_ID in door.visible:
                refs.add(study.reference)
        door.record(AuditEvent(EventType.STUDY_LIST, user=door.actor, patients=tuple(sorted(refs)),
                               detail={"studies": len(result),
                                       **({"query": {"patient_id": patient_id}} if patient_id else {})}))
        return result

    @gated(Action.LIST_STUDIES)
    def series(self, door: Access, study_uid: str) -> list[SeriesSummary]:
        with door.store.reading() as conn:
            return StudyBook(conn).series(study_uid)

    @gated(Action.VIEW_IMAGES)
    def open_series(self, door: Access, series_uid: str) -> SeriesImages:
        """The images of one series, in slice order; opening them is one audited access."""
        assert door.session is not None
        session = door.session
        return self._opened(door, series_uid).images(lambda info: _frames(door, session, info))

    @gated(Action.VIEW_IMAGES)
    def open_frames(self, door: Access, series_uid: str) -> SeriesFrames:
        """What :meth:`open_series` opens, for a client of the workstation service, which fetches
        each instance with :meth:`frame_data` and decodes it itself; the same audited access."""
        return self._opened(door, series_uid)

    @gated(Action.VIEW_IMAGES)
    def frame_data(self, door: Access, sop_uid: str) -> bytes:
        """One stored instance of a study this session opened (:meth:`open_frames`, audited then),
        for display; any other instance is refused."""
        found = self._opened_instance(door, sop_uid)
        # (as for an open series in this process: the restriction was checked when it was opened)
        return door.store.plaintext(sop_uid, found.study_uid, found.blob)

    @gated(Action.VIEW_IMAGES)
    def attributes(self, door: Access, sop_uid: str) -> list[TagRow]:
        """Every attribute of one instance of a series this session opened (the tag browser), with
        what the role may not be shown withheld (minimum necessary); one audited access."""
        from app.imaging.tags import read_attributes, tag_rows

        found = self._opened_instance(door, sop_uid)
        patients = door.check_restriction(found.study_uid)
        rows = tag_rows(read_attributes(door.store.plaintext(sop_uid, found.study_uid, found.blob)),
                        door.visible)
        door.record(AuditEvent(EventType.INSTANCES_READ, user=door.actor, studies=(found.study_uid,),
                               patients=patients, detail={"instances": 1, "attributes": len(rows)}))
        return rows

    def _opened_instance(self, door: Access, sop_uid: str) -> StoredInstance:
        """The stored instance ``sop_uid`` if it is of a study this session opened; else refused."""
        assert door.session is not None
        with door.store.reading() as conn:
            found = StudyBook(conn).instance(sop_uid)
        if found is None or found.study_uid not in self._open.get(door.session.token_hash, ()):
            raise NotPermitted("Open the series before its images.")
        return found

    @gated(Action.VIEW_IMAGES)
    def pixel_stream(self, door: Access, series_uid: str, sop_uids: list[str]) -> Iterator[memoryview]:
        """The stored pixel values of images of a series this session opened, one image after
        another, for a client of the service building a volume (one answer instead of a request
        per image). Only images the index describes whole (:func:`native`): the client knows each
        one's size, so nothing but pixels crosses. Decrypted as the answer is read."""
        from app.imaging.pixels import native

        assert door.session is not None
        with door.store.reading() as conn:
            frames = StudyBook(conn).frames(series_uid)
        infos = {info.sop_uid: info for info in frames.frames} if frames is not None else {}
        opened = self._open.get(door.session.token_hash, ())
        if not infos or any(info.study_uid not in opened for info in infos.values()):
            raise NotPermitted("Open the series before its images.")
        chosen = [infos.get(uid) for uid in sop_uids]
        wanted = [info for info in chosen if info is not None and native(info)]
        if len(wanted) < len(chosen):
            raise UsageError("Only the series' own images stored without compression are sent together.")
        return _pixels(door, wanted)

    def _opened(self, door: Access, series_uid: str) -> SeriesFrames:
        from app.vault.key_images import key_frames

        assert door.session is not None
        with door.store.reading() as conn:
            frames = StudyBook(conn).frames(series_uid)
        frames = frames or key_frames(door, series_uid)  # (a "key images" series: what its documents select)
        if frames is None:
            raise CustodianError("This series has no images in the cache.")
        study_uid = frames.frames[0].study_uid
        patients = door.check_restriction(study_uid)
        with door.store.transaction() as conn:
            StudyBook(conn).opened(study_uid)
            door.record(AuditEvent(EventType.INSTANCES_READ, user=door.actor, studies=(study_uid,),
                                   patients=patients,
                                   detail={"series": series_uid, "instances": len(frames.frames)}))
        self._open.setdefault(door.session.token_hash, set()).add(study_uid)
        return frames

    @gated(Action.VIEW_IMAGES)
    def thumbnails(self, door: Access, study_uid: str, size: int = THUMBNAIL_SIZE) -> dict[str, np.ndarray]:
        """A small picture of the middle image of each series of a study, by series UID.

        Showing them is one audited access to the study. A restricted patient without a live
        break-glass grant gets none and nothing is decrypted: browsing past such a study in the
        list is not an attempt to open it (that is refused and alerted when it is opened). A series
        whose middle image cannot be decoded has no thumbnail; opening it says why.
        """
        from app.imaging.thumbnail import shrink
        from app.vault.key_images import key_frames

        patient = door.patient_of(study_uid)
        if patient is None or not door.may_open(study_uid):
            return {}
        with door.store.reading() as conn:
            uids = StudyBook(conn).series_uids(study_uid)
        pictures: dict[str, np.ndarray] = {}
        for series_uid in uids:
            with door.store.reading() as conn:
                frames = StudyBook(conn).frames(series_uid)
            frames = frames or key_frames(door, series_uid)
            if frames is None:
                continue
            images = frames.images(lambda info: _decode(door, info))
            with contextlib.suppress(CustodianError):
                pictures[series_uid] = shrink(images.render(len(images) // 2), size)
        if pictures:
            door.record(AuditEvent(EventType.INSTANCES_READ, user=door.actor, studies=(study_uid,),
                                   patients=(patient[1],), detail={"thumbnails": len(pictures)}))
        return pictures

    @gated(Action.VIEW_IMAGES)
    def read_instance(self, door: Access, sop_uid: str) -> bytes:
        """The stored Part 10 bytes of one instance (for sending and export)."""
        with door.store.reading() as conn:
            found = StudyBook(conn).instance(sop_uid)
        if found is None:
            raise CustodianError("This instance is not in the cache.")
        patients = door.check_restriction(found.study_uid)
        door.record(AuditEvent(EventType.INSTANCES_READ, user=door.actor, studies=(found.study_uid,),
                               patients=patients, detail={"instances": 1}))
        return door.store.plaintext(sop_uid, found.study_uid, found.blob)

    @gated(Action.VIEW_IMAGES)
    def reports(self, door: Access, study_uid: str) -> list[Report]:
        """The study's reports (structured and PDF), read as radiologists and technologists view its
        images: one audited access to the study, minimum necessary applied to each header. Reading
        works in emergency mode, so the prior's report is there in downtime."""
        from app.imaging.report import is_report, read_report

        if door.patient_of(study_uid) is None:
            raise CustodianError("This study is not in the cache.")
        patients = door.check_restriction(study_uid)
        with door.store.reading() as conn:
            stored = [i for i in StudyBook(conn).instances(study_uid) if is_report(i.sop_class)]
        found = [read_report(door.store.plaintext(i.sop_uid, i.study_uid, i.blob)) for i in stored]
        door.record(AuditEvent(EventType.INSTANCES_READ, user=door.actor, studies=(study_uid,),
                               patients=patients, detail={"reports": len(found)}))
        return [replace(report, header=door.shown(report.header)) for report in found]

    # ------------------------------------------------------------------ measurements
    @gated(Action.MEASURE)
    def save_measurement(self, door: Access, measurement: Measurement) -> Measurement:
        """Keep a reader's measurement on an instance of the cache; returns it with its number."""
        with door.store.transaction() as conn:
            saved = MeasurementBook(conn).save(door.actor, measurement)
            if saved is None:
                raise CustodianError("This image is not in the cache; the measurement was not saved.")
            ident, study_uid = saved
            _measurement_event(door, EventType.MEASUREMENT_SAVED, study_uid, ident, measurement.kind.value)
        return measurement.saved_as(ident)

    @gated(Action.MEASURE)
    def measurements(self, door: Access, series_uid: str) -> list[Measurement]:
        """The session user's own measurements on a series (nobody else's)."""
        with door.store.reading() as conn:
            return MeasurementBook(conn).of(door.actor, series_uid)

    @gated(Action.MEASURE)
    def delete_measurement(self, door: Access, ident: int) -> None:
        with door.store.transaction() as conn:
            deleted = MeasurementBook(conn).delete(door.actor, ident)
            if deleted is not None:  # (not this reader's, or already gone: nothing was written)
                _measurement_event(door, EventType.MEASUREMENT_DELETED, deleted[0], ident, deleted[1])

    # ------------------------------------------------------------------ restricted patients
    @gated(Action.BREAK_GLASS)
    def break_glass(self, door: Access, study_uid: str, reason: str, code: str) -> float:
        """Emergency access to a restricted patient for a bounded time; alerts the privacy officer."""
        assert door.session is not None
        if len(reason.strip()) < 10:
            raise UsageError("State the emergency reason in a few words (at least 10 characters).")
        patient = door.patient_of(study_uid)
        if patient is None:
            raise CustodianError("This study is not in the cache.")
        self._accounts.step_up(door.session, code)
        key, pid, _ = patient
        expires = time.time() + door.policy.break_glass_seconds
        with door.store.transaction() as conn:
            StudyBook(conn).grant(door.signed_in.id, key, reason.strip(), expires)
            door.record(AuditEvent(EventType.BREAK_GLASS, Outcome.SUCCESS, user=door.actor,
                                   studies=(study_uid,), patients=(pid,),
                                   detail={"reason": reason.strip(), "until": expires}))
            door.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE,
                                   user=door.actor, studies=(study_uid,), patients=(pid,),
                                   detail={"alert": "break-glass access", "reason": reason.strip()}))
        return expires


def _frames(door: Access, session: Session, info: FrameInfo) -> Decoded:
    """One image's pixels for an open series: reading images counts as activity."""
    with door.store.reading():
        door.sessions.check(session)
    return _decode(door, info)


def _decode(door: Access, info: FrameInfo) -> Decoded:
    from app.imaging.pixels import decode_frames

    return decode_frames(info, door.store.plaintext(info.sop_uid, info.study_uid, info.blob_id))


def _measurement_event(door: Access, kind: EventType, study_uid: str, ident: int | None, what: str) -> None:
    """A reader's measurement or note is PHI written about the patient: in the trail with the
    patient and study, in the same transaction."""
    filed = PatientBook(door.store.conn).of_study(study_uid)
    door.record(AuditEvent(kind, user=door.actor, studies=(study_uid,), patients=(filed[2],) if filed else (),
                           detail={"measurement": ident, "kind": what}))


def _pixels(door: Access, infos: list[FrameInfo]) -> Iterator[memoryview]:
    from app.imaging.pixels import native_size

    for info in infos:
        data = door.store.plaintext(info.sop_uid, info.study_uid, info.blob_id)
        start, size = info.pixel_offset or 0, native_size(info)
        if len(data) < start + size:
            raise CustodianError("A stored image is shorter than its index says.")
        yield memoryview(data)[start:start + size]


def signature_types() -> dict[str, object]:
    """The types this service's signatures name that are imported above for type checking only, so
    that listing studies loads neither NumPy nor pydicom (issue 24); the workstation service, which
    reads the signatures (app.service.methods), resolves them with these."""
    import numpy as np

    from app.imaging.measure import Measurement
    from app.imaging.report import Report
    from app.imaging.series import SeriesFrames, SeriesImages
    from app.imaging.tags import TagRow

    return {"np": np, "Measurement": Measurement, "Report": Report, "SeriesFrames": SeriesFrames,
            "SeriesImages": SeriesImages, "TagRow": TagRow}
