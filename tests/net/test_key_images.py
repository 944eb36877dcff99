"""Key images: each reader's own marks, audited with the patient, forgotten with a shred; sent to
Orthanc as a Key Object Selection document that DICOM's checker (dciodvfy) accepts and that comes
back with the study, value for value; and a document shows under its study only that study's own
images, never another patient's, whatever UIDs it names."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError, NotPermitted, UsageError
from app.imaging.key_objects import OF_INTEREST, key_object, selected_images
from app.net.nodes import Node
from app.security.roles import Role
from app.store.key_images import KeyImage
from tests.conftest import VaultEnv, make_env
from tests.peers.orthanc import AET, Orthanc

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("dciodvfy") is None,
                                reason="Orthanc and dicom3tools are not installed (installer/setup.sh does)")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultEnv]:
    """One vault for the module (each test has its own patients)."""
    e = make_env(tmp_path_factory.mktemp("keys") / "home")
    for name, role in (("rad", Role.RADIOLOGIST), ("tech", Role.TECHNOLOGIST), ("rad2", Role.RADIOLOGIST),
                       ("po", Role.PRIVACY_OFFICER)):
        e.add(name, role)
    yield e
    e.vault.close()


def _study(env: VaultEnv, patient: Patient, slices: int = 3) -> list[pydicom.Dataset]:
    datasets = ct_study(patient, slices=slices, size=16)
    env.vault.intake.import_bytes(env.login("tech"), [(f"m{i}", to_bytes(d)) for i, d in enumerate(datasets)])
    return datasets


def _header(ds: pydicom.Dataset) -> pydicom.Dataset:
    return pydicom.dcmread(DicomBytesIO(to_bytes(ds)), stop_before_pixels=True)


def test_marks_are_each_readers_own_audited_and_gone_with_a_shred(env: VaultEnv) -> None:
    cts = _study(env, Patient("PID-KEY", "Key^Kim"))
    study_uid, series_uid = str(cts[0].StudyInstanceUID), str(cts[0].SeriesInstanceUID)
    rad, keys = env.login("rad"), env.vault.key_images
    first, third = (str(cts[i].SOPInstanceUID) for i in (0, 2))
    assert keys.mark(rad, third) == KeyImage(study_uid, series_uid, third, 0, 3)
    assert keys.mark(rad, first) is not None
    assert keys.mark(rad, first) is None  # marked already: nothing changes, nothing is recorded
    assert [k.sop_uid for k in keys.of_study(rad, study_uid)] == [first, third]  # in image order
    assert keys.of_study(env.login("rad2"), study_uid) == []  # nobody else's
    assert keys.mark(env.login("rad2"), first, on=False) is None
    assert keys.mark(rad, first, on=False) is not None
    assert [k.sop_uid for k in keys.of_study(rad, study_uid)] == [third]
    with pytest.raises(CustodianError, match="not in the cache"):
        keys.mark(rad, first, frame=1)  # a single-frame image has no second frame
    with pytest.raises(NotPermitted):
        keys.mark(env.login("tech"), first)
    with pytest.raises(UsageError, match="No PACS node"):
        keys.send(rad, study_uid)

    trail = env.vault.trail.show(env.login("po"), AuditQuery(patient="PID-KEY"))
    events = [(r.type, r.user, r.studies, r.patients, r.detail) for r in reversed(trail)
              if r.detail.get("kind") == "key image"]
    marked = {"kind": "key image", "frame": 0}
    assert events == [
        (EventType.MEASUREMENT_SAVED.value, "rad", (study_uid,), ("PID-KEY",), {**marked, "instance": third}),
        (EventType.MEASUREMENT_SAVED.value, "rad", (study_uid,), ("PID-KEY",), {**marked, "instance": first}),
        (EventType.MEASUREMENT_DELETED.value, "rad", (study_uid,), ("PID-KEY",),
         {**marked, "instance": first})]

    env.vault.admin.shred(env.login("po"), study_uid, "patient's erasure request")
    left = env.vault._core.query("SELECT count(*) FROM key_images WHERE study_uid = ?", (study_uid,))
    assert left == [(0,)]


def test_a_restricted_patients_image_is_not_marked_without_break_glass(env: VaultEnv) -> None:
    cts = _study(env, Patient("PID-KEY-VIP", "Key^Vip"), slices=1)
    env.vault.admin.restrict_patient(env.login("po"), "PID-KEY-VIP")
    with pytest.raises(NotPermitted, match="restricted"):
        env.vault.key_images.mark(env.login("rad"), str(cts[0].SOPInstanceUID))
    assert env.vault.key_images.of_study(env.login("rad"), str(cts[0].StudyInstanceUID)) == []


def test_a_key_object_shows_its_own_studys_images_and_never_another_patients(env: VaultEnv) -> None:
    own = _study(env, Patient("PID-OWN", "Own^Olga"))
    other = _study(env, Patient("PID-OTHER", "Other^Otto"), slices=2)
    # A document of Olga's study that names one of her images and both of Otto's (as a broken or
    # hostile sender might: the evidence is Olga's, the references are rewritten).
    _, data = key_object([_header(own[1]), _header(own[0]), _header(own[2])], {}, "rad")
    document = pydicom.dcmread(DicomBytesIO(data))
    items = [item for item in document.ContentSequence if item.ValueType == "IMAGE"]
    for item, foreign in zip(items[1:], other, strict=True):
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = foreign.SOPInstanceUID
    assert env.vault.intake.import_bytes(env.login("tech"), [("kos", to_bytes(document))]).imported == 1

    rad = env.login("rad")
    listed = env.vault.reading.series(rad, str(own[0].StudyInstanceUID))
    (key_series,) = [s for s in listed if s.modality == "KO"]
    images = env.vault.reading.open_series(rad, key_series.series_uid)
    assert [info.sop_uid for info in images.instances] == [str(own[1].SOPInstanceUID)]
    assert images.render(0).shape == (16, 16)

    # A document under Otto's study UID that names Olga as its patient never enters the cache.
    stray = pydicom.dcmread(DicomBytesIO(data))
    stray.StudyInstanceUID, stray.SOPInstanceUID = other[0].StudyInstanceUID, pydicom.uid.generate_uid()
    report = env.vault.intake.import_bytes(env.login("tech"), [("stray", to_bytes(stray))])
    assert report.imported == 0 and "different Patient ID" in report.rejected[0].reason


def test_key_images_reach_orthanc_and_come_back_with_the_study(env: VaultEnv, tmp_path: Path) -> None:
    cts = _study(env, Patient("PID-TRIP", "Trip^Tara"))
    study_uid = str(cts[0].StudyInstanceUID)
    rad, tech = env.login("rad"), env.login("tech")
    marked = [str(cts[i].SOPInstanceUID) for i in (0, 2)]
    for uid in marked:
        env.vault.key_images.mark(rad, uid)
    peer = Orthanc(tmp_path / "orthanc", known={"custodian": ("CUSTODIAN", 11112)})
    peer.start()
    try:
        env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", peer.port))
        sent = env.vault.key_images.send(rad, study_uid)
        assert (sent.sent, sent.queued, sent.images, sent.node) == (True, False, 2, "pacs")
        ours = env.vault.reading.read_instance(rad, sent.sop_uid)  # the document, stored in the study
        assert env.vault.outbox.send(tech, "pacs", study_uid).report.failed == {}  # the study, document too
        (found,) = [i["ID"] for i in peer.rest("/instances?expand")  # type: ignore[union-attr]
                    if i["MainDicomTags"]["SOPInstanceUID"] == sent.sop_uid]
        with urllib.request.urlopen(f"http://127.0.0.1:{peer.http_port}/instances/{found}/file") as reply:
            at_pacs = reply.read()
        env.vault.admin.shred(env.login("po"), study_uid, "to fetch it back from the PACS")
        env.vault.pacs.retrieve(rad, "pacs", study_uid)
    finally:
        peer.stop()

    kos = pydicom.dcmread(DicomBytesIO(at_pacs))
    assert kos == pydicom.dcmread(DicomBytesIO(ours))  # every attribute as sent (the file meta is Orthanc's)
    assert selected_images(at_pacs) == marked
    assert kos.ConceptNameCodeSequence[0].CodeValue == OF_INTEREST[0]
    assert (kos.PatientID, kos.StudyInstanceUID, kos.Modality) == ("PID-TRIP", study_uid, "KO")
    evidence = kos.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study_uid
    assert sorted((r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID)
                  for s in evidence.ReferencedSeriesSequence for r in s.ReferencedSOPSequence) == \
        sorted((str(cts[0].SOPClassUID), uid) for uid in marked)
    checked = tmp_path / "kos.dcm"
    checked.write_bytes(at_pacs)
    verdict = subprocess.run(["dciodvfy", str(checked)], capture_output=True, text=True, check=False)
    assert "Error" not in verdict.stdout + verdict.stderr, verdict.stderr

    # Back from the PACS with its study, the document opens as the study's "key images" series.
    (key_series,) = [s for s in env.vault.reading.series(rad, study_uid) if s.modality == "KO"]
    images = env.vault.reading.open_series(rad, key_series.series_uid)
    assert sorted(info.sop_uid for info in images.instances) == sorted(marked)
    assert env.vault.key_images.of_study(rad, study_uid) == []  # the marks went with the shred
