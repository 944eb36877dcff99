"""Presentation states: a radiologist's measurements, notes, window and rotation saved as a GSPS that
DCMTK's checkers accept, sent to Orthanc with the study and retrieved into another workstation
value for value; a state naming another patient is never applied to this patient's images."""

from __future__ import annotations

import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError, NotPermitted
from app.imaging import gsps
from app.imaging.display import Window
from app.imaging.gsps import Graphic, Note
from app.imaging.measure import Kind, Measurement
from app.net.nodes import Node
from app.security.roles import Role
from tests.conftest import VaultEnv, make_env
from tests.peers.orthanc import AET, Orthanc

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("dcmpschk") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")
PATIENT = Patient("PID-GSPS", "State^Stella")
OTHER = Patient("PID-OTHER", "Other^Otto")


def _series(env: VaultEnv, patient: Patient) -> list[pydicom.Dataset]:
    images = ct_study(patient, slices=2, size=32)
    report = env.vault.intake.import_bytes(env.login("tech"), [(f"i{i}", to_bytes(ds))
                                                               for i, ds in enumerate(images)])
    assert report.imported == 2
    return images


def _saved_state(env: VaultEnv, images: list[pydicom.Dataset]) -> gsps.PresentationState:
    rad, series = env.login("rad"), str(images[0].SeriesInstanceUID)
    first, second = str(images[0].SOPInstanceUID), str(images[1].SOPInstanceUID)
    for m in (Measurement(Kind.DISTANCE, first, 0, ((2.0, 3.0), (20.0, 25.0))),
              Measurement(Kind.ELLIPSE, first, 0, ((4.0, 4.0), (12.0, 10.0))),
              Measurement(Kind.TEXT, second, 0, ((5.0, 6.0),), "cyst?")):
        env.vault.reading.save_measurement(rad, m)
    saved = env.vault.states.save_state(rad, series, Window(40, 400), 90, True)
    (event,) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.MEASUREMENT_SAVED, limit=1))
    assert event.user == "rad" and event.detail == {"presentation_state": saved.sop_uid, "measurements": 3}
    (listed,) = env.vault.states.states(rad, series)
    assert listed == saved and saved.creator == "rad"
    return env.vault.states.state(rad, series, saved.sop_uid)


def test_a_saved_state_passes_dcmtk_goes_round_orthanc_value_for_value_and_keeps_to_its_patient(
        env: VaultEnv, tmp_path: Path) -> None:
    images = _series(env, PATIENT)
    state = _saved_state(env, images)
    first, second = str(images[0].SOPInstanceUID), str(images[1].SOPInstanceUID)
    assert (state.rotation, state.flip, state.vois[0].window) == (90, True, Window(40, 400))
    (on_first,) = state.drawn_on(first, 0)
    assert on_first.graphics[0] == Graphic("POLYLINE", ((2.0, 3.0), (20.0, 25.0)))
    assert on_first.graphics[1] == Graphic("ELLIPSE", ((4.0, 7.0), (12.0, 7.0), (8.0, 4.0), (8.0, 10.0)))
    distance, ellipse = on_first.notes
    assert distance.text.endswith(" mm") and distance.anchor == (20.0, 25.0)
    assert ellipse.text.startswith("Mean ") and " HU" in ellipse.text and ellipse.anchor == (12.0, 10.0)
    assert state.drawn_on(second, 0)[0].notes == (Note("cyst?", (5.0, 6.0)),)

    _dcmtk_accepts(env, state, tmp_path / "state.dcm")
    _round_trip(env, images, state, tmp_path)
    _another_patients_state_is_never_applied(env, images, state)
    _a_state_too_large_to_apply_is_left_out(env, images, state)
    _saved_only_by_readers_outside_emergency_mode(env, str(images[0].SeriesInstanceUID))


def _dcmtk_accepts(env: VaultEnv, state: gsps.PresentationState, written: Path) -> None:
    written.write_bytes(env.vault.reading.read_instance(env.login("rad"), state.summary.sop_uid))
    checked = subprocess.run(["dcmpschk", str(written)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "Test passed" in checked.stdout + checked.stderr
    if shutil.which("dciodvfy"):
        verified = subprocess.run(["dciodvfy", str(written)], capture_output=True, text=True, timeout=30)
        assert "Error" not in verified.stdout + verified.stderr


def _round_trip(env: VaultEnv, images: list[pydicom.Dataset], state: gsps.PresentationState,
                tmp_path: Path) -> None:
    """Sent with the study to Orthanc, retrieved by C-GET into another workstation: the same state."""
    peer = Orthanc(tmp_path / "orthanc", known={"custodian": ("CUSTODIAN", 11112)})
    peer.start()
    other = make_env(tmp_path / "other")
    try:
        other.add("rad", Role.RADIOLOGIST)
        node = Node("pacs", AET, "127.0.0.1", peer.port)
        env.vault.nodes.add(env.login("admin"), node)
        sent = env.vault.outbox.send(env.login("tech"), "pacs", str(images[0].StudyInstanceUID))
        assert len(sent.report.sent) == 3 and not sent.report.failed  # two images and the state
        other.vault.nodes.add(other.login("admin"), node)
        other.vault.pacs.retrieve(other.login("rad"), "pacs", str(images[0].StudyInstanceUID))
        series = str(images[0].SeriesInstanceUID)
        (listed,) = other.vault.states.states(other.login("rad"), series)
        assert other.vault.states.state(other.login("rad"), series, listed.sop_uid) == state
    finally:
        peer.stop()
        other.vault.close()


def _another_patients_state_is_never_applied(env: VaultEnv, images: list[pydicom.Dataset],
                                             own_state: gsps.PresentationState) -> None:
    series = str(images[0].SeriesInstanceUID)
    rad, tech = env.login("rad"), env.login("tech")
    _series(env, OTHER)  # (the other patient's record exists)

    def state_of_other(study_uid: str) -> bytes:
        """A state that references this patient's images but names the other patient."""
        headers = [pydicom.dcmread(BytesIO(to_bytes(ds))) for ds in images]
        for ds in headers:
            ds.PatientID, ds.PatientName, ds.StudyInstanceUID = OTHER.patient_id, OTHER.name, study_uid
        label = gsps.Labelled(Measurement(Kind.TEXT, str(images[0].SOPInstanceUID), 0, ((5.0, 5.0),)), "x")
        state = gsps.build(headers, [label], Window(0, 100), rotation=0, flip=False, sop_uid=generate_uid(),
                           series_uid=generate_uid(), creator="someone", software="test")
        return to_bytes(state)

    # In this patient's study: intake quarantines it like any instance of another patient.
    report = env.vault.intake.import_bytes(tech, [("mixed", state_of_other(str(images[0].StudyInstanceUID)))])
    assert report.imported == 0 and "different Patient ID" in report.rejected[0].reason
    # In a study of its own: filed under the other patient, never listed for nor applied to these images.
    own = state_of_other(generate_uid())
    assert env.vault.intake.import_bytes(tech, [("own", own)]).imported == 1
    assert env.vault.states.states(rad, series) == [own_state.summary]
    with pytest.raises(CustodianError, match="does not apply"):
        env.vault.states.state(rad, series, str(pydicom.dcmread(BytesIO(own)).SOPInstanceUID))


def _a_state_too_large_to_apply_is_left_out(env: VaultEnv, images: list[pydicom.Dataset],
                                            own_state: gsps.PresentationState) -> None:
    """A received state of this patient's with 300 000 points: refused, the others still listed."""
    headers = [pydicom.dcmread(BytesIO(to_bytes(ds))) for ds in images]
    for ds in headers:
        ds.StudyInstanceUID = generate_uid()
    label = gsps.Labelled(Measurement(Kind.TEXT, str(images[0].SOPInstanceUID), 0, ((5.0, 5.0),)), "x")
    huge = gsps.build(headers, [label], None, rotation=0, flip=False, sop_uid=generate_uid(),
                      series_uid=generate_uid(), creator="someone", software="test")
    points = pydicom.Dataset()
    points.GraphicAnnotationUnits, points.GraphicType = "PIXEL", "POLYLINE"
    points.GraphicData = [0.5] * 600_000
    huge.GraphicAnnotationSequence[0].GraphicObjectSequence = [points]
    assert env.vault.intake.import_bytes(env.login("tech"), [("huge", to_bytes(huge))]).imported == 1
    assert env.vault.states.states(env.login("rad"), str(images[0].SeriesInstanceUID)) == [own_state.summary]
    (event,) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.INSTANCES_READ, limit=1))
    assert event.detail["refused"] == 1


def _saved_only_by_readers_outside_emergency_mode(env: VaultEnv, series: str) -> None:
    with pytest.raises(NotPermitted):
        env.vault.states.save_state(env.login("tech"), series)
    env.vault.enter_emergency_mode()
    with pytest.raises(NotPermitted, match="Emergency mode"):
        env.vault.states.save_state(env.login("rad"), series)
