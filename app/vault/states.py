"""Presentation states: a reader's measurements, notes, window and rotation of a series saved as a
Grayscale Softcopy Presentation State in the study (so a send of the study carries it to the PACS),
and the states that apply to a series listed and read back for the viewport.

A state is looked for only among the studies filed under the series' own patient record, so one
that names another patient (filed under that patient, or quarantined at intake when its study is
this patient's) is never listed for, nor applied to, this patient's images.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

import app
from app.audit.events import AuditEvent, EventType
from app.errors import CustodianError, NotPermitted
from app.imaging import gsps
from app.imaging.display import Window
from app.imaging.gsps import PresentationState, StateSummary
from app.imaging.measure import ROIS, Measurement, label, modality_unit
from app.imaging.pixels import FrameInfo, decode_frames
from app.imaging.series import SeriesFrames
from app.security.roles import Action
from app.store.books import MeasurementBook, StudyBook
from app.store.states import StateBook
from app.vault.gate import Access, Service, gated
from app.vault.intake import store_made

NOT_APPLICABLE = "This presentation state does not apply to this series."


class StatesService(Service):
    @gated(Action.MEASURE)
    def save_state(self, door: Access, series_uid: str, window: Window | None = None, rotation: int = 0,
                   flip: bool = False) -> StateSummary:
        """The reader's own measurements and notes on a series, with ``window`` and the view's
        ``rotation`` (clockwise degrees, after a left-right ``flip``), as a presentation state
        stored in the series' study: an import of the reader's, under intake's rules."""
        if self._gate.read_only:
            door.refuse("emergency mode", Action.MEASURE)
            raise NotPermitted("Emergency mode: the cache is read-only, so a presentation state cannot be "
                               "saved until Custodian starts normally again.")
        frames = _frames(door, series_uid)
        study_uid = frames.frames[0].study_uid
        patients = door.check_restriction(study_uid)
        with door.store.reading() as conn:
            measurements = MeasurementBook(conn).of(door.actor, series_uid)
        headers = [dcmread(BytesIO(_plain(door, info)), stop_before_pixels=True) for info in frames.frames]
        labelled = [gsps.Labelled(m, _words(door, frames, m)) for m in measurements]
        state = gsps.build(headers, labelled, window, rotation=rotation, flip=flip, sop_uid=generate_uid(),
                           series_uid=generate_uid(), creator=door.actor, software=app.__version__)
        out = BytesIO()
        dcmwrite(out, state, enforce_file_format=True)
        _store(door, out.getvalue())
        door.record(AuditEvent(EventType.MEASUREMENT_SAVED, user=door.actor, studies=(study_uid,),
                               patients=patients, detail={"presentation_state": str(state.SOPInstanceUID),
                                                          "measurements": len(measurements)}))
        return gsps.summary(state)

    @gated(Action.VIEW_IMAGES)
    def states(self, door: Access, series_uid: str) -> list[StateSummary]:
        """The presentation states of the series' patient that apply to the series, newest first;
        reading them is one audited access to the series' study."""
        found = _applying(door, series_uid)
        return sorted((state.summary for state in found), key=lambda s: s.created, reverse=True)

    @gated(Action.VIEW_IMAGES)
    def state(self, door: Access, series_uid: str, sop_uid: str) -> PresentationState:
        """One of the states :meth:`states` lists, to apply to the series; any other is refused."""
        chosen = next((s for s in _applying(door, series_uid) if s.summary.sop_uid == sop_uid), None)
        if chosen is None:
            raise CustodianError(NOT_APPLICABLE)
        return chosen


def _frames(door: Access, series_uid: str) -> SeriesFrames:
    with door.store.reading() as conn:
        frames = StudyBook(conn).frames(series_uid)
    if frames is None:
        raise CustodianError("This series has no images in the cache.")
    return frames


def _plain(door: Access, info: FrameInfo) -> bytes:
    return door.store.plaintext(info.sop_uid, info.study_uid, info.blob_id)


def _words(door: Access, frames: SeriesFrames, m: Measurement) -> str:
    """What the reader saw beside ``m``: an ROI's statistics need its image's modality values."""
    info = next((i for i in frames.frames if i.sop_uid == m.sop_uid), None)
    if info is None:
        return ""
    values = None
    if m.kind in ROIS:
        decoded = decode_frames(info, _plain(door, info))
        if m.frame < len(decoded.frames) and not decoded.presentation.is_colour:
            values = decoded.presentation.modality(decoded.frames[m.frame], m.frame)
    return label(m, values, info.pixel_spacing, modality_unit(frames.modality))


def _store(door: Access, data: bytes) -> None:
    """Into the vault as intake takes any instance (the patient checked against the study's)."""
    report = store_made(door, "presentation state", data)
    if report.imported != 1:
        why = report.rejected[0].reason if report.rejected else "it was not stored"
        raise CustodianError(f"The presentation state was not saved: {why}.")


def _applying(door: Access, series_uid: str) -> list[PresentationState]:
    """The states filed under the series' patient record that refer to the series."""
    study_uid = _frames(door, series_uid).frames[0].study_uid
    patients = door.check_restriction(study_uid)
    with door.store.reading() as conn:
        filed = StudyBook(conn).patient(study_uid)
        stored = StateBook(conn).of_patient(filed.key, (gsps.GSPS_CLASS,)) if filed else []
    found, refused = [], 0
    for item in stored:
        try:  # (one too large to apply is left out: the others still apply)
            state = gsps.read(dcmread(BytesIO(door.store.plaintext(item.sop_uid, item.study_uid, item.blob))))
        except CustodianError:
            refused += 1
            continue
        if state.references(series_uid):
            found.append(state)
    door.record(AuditEvent(EventType.INSTANCES_READ, user=door.actor, studies=(study_uid,), patients=patients,
                           detail={"series": series_uid, "presentation_states": len(found),
                                   **({"refused": refused} if refused else {})}))
    return found
