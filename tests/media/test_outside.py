"""Outside media into the vault: our own encrypted exports as another hospital receives them, a CD
image, and pydicom's real DICOMDIR file-set with junk beside it."""

from __future__ import annotations

import io
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from app.errors import CustodianError, UsageError
from app.media.disclosures import MediaKind
from app.media.outside import Reconcile
from app.security.roles import Role
from tests.conftest import VaultEnv, make_env
from tests.media.conftest import PATIENT, MediaEnv
from tests.stress.bombs import MiB, deflated_bomb


@pytest.fixture
def elsewhere(tmp_path: Path) -> VaultEnv:
    """Another hospital's workstation, with a librarian and a radiologist."""
    env = make_env(tmp_path / "elsewhere")
    env.add("lib", Role.LIBRARIAN)
    env.add("rad", Role.RADIOLOGIST)
    yield env
    env.vault.close()


def _stored(env: VaultEnv) -> list[pydicom.Dataset]:
    rad = env.login("rad")
    datasets = []
    for study in env.vault.reading.studies(rad):
        for series in env.vault.reading.series(rad, study.study_uid):
            for info in env.vault.reading.open_series(rad, series.series_uid).instances:
                data = env.vault.reading.read_instance(rad, info.sop_uid)
                datasets.append(pydicom.dcmread(io.BytesIO(data)))
    return datasets


def test_an_encrypted_usb_export_is_surveyed_and_imported_under_the_outside_issuer(
        media: MediaEnv, elsewhere: VaultEnv) -> None:
    result = media.export(media.request())
    archive = media.out / "media.zip"
    vault, lib = elsewhere.vault, elsewhere.login("lib")
    with pytest.raises(UsageError, match="encrypted"):
        vault.intake.survey_media(lib, archive)
    with pytest.raises(CustodianError, match="passphrase is wrong"):
        vault.intake.survey_media(lib, archive, "not-the-passphrase")
    found = vault.intake.survey_media(lib, archive, result.passphrase)
    assert [(s.patient_id, s.instances) for s in found.studies] == [(PATIENT.patient_id, 12)]
    assert found.studies[0].patient_name == PATIENT.name and elsewhere.vault.reading.studies(lib) == []

    report = vault.intake.import_media(lib, archive, result.passphrase,
                                       Reconcile(outside_issuer="St Elsewhere"))
    assert report.imported == 12 and not report.rejected  # README.TXT and DICOMDIR are not instances
    stored = _stored(elsewhere)
    assert {(ds.PatientID, ds.IssuerOfPatientID) for ds in stored} == {(PATIENT.patient_id, "St Elsewhere")}
    assert {str(ds.SOPInstanceUID) for ds in stored} == media.sop_uids


def test_a_damaged_file_inside_the_zip_is_refused_and_the_others_arrive(media: MediaEnv,
                                                                        elsewhere: VaultEnv) -> None:
    """Found by fuzzing: a member that fails its authentication code stopped the whole import."""
    result = media.export(media.request())
    archive = media.out / "media.zip"
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as listing:
        member = next(m for m in listing.infolist() if m.filename.endswith("IM000005"))
    data[member.header_offset + 30 + len(member.filename) + 200] ^= 0xFF  # inside its encrypted data
    archive.write_bytes(data)
    report = elsewhere.vault.intake.import_media(elsewhere.login("lib"), archive, result.passphrase)
    assert report.imported == 11
    assert [r.reason for r in report.rejected] == [
        "it could not be read from the zip file: the media is damaged"]


def test_a_cd_image_is_reconciled_with_the_local_patient(media: MediaEnv, elsewhere: VaultEnv) -> None:
    result = media.export(media.request("disc.iso", media=MediaKind.ISO))
    report = elsewhere.vault.intake.import_media(elsewhere.login("lib"), media.out / "disc.iso",
                                                 result.passphrase,
                                          Reconcile(local_patient_id="LOCAL-77"))
    assert report.imported == 12
    stored = _stored(elsewhere)
    assert {ds.PatientID for ds in stored} == {"LOCAL-77"}
    assert {ds.OtherPatientIDsSequence[0].PatientID for ds in stored} == {PATIENT.patient_id}
    assert [s.patient_id for s in elsewhere.vault.reading.studies(elsewhere.login("lib"))] == ["LOCAL-77"]
    with pytest.raises(UsageError):
        Reconcile(local_patient_id="A", outside_issuer="B")


def test_a_real_file_set_with_junk_beside_it(elsewhere: VaultEnv, tmp_path: Path) -> None:
    """pydicom's DICOMDIR test file-set, a viewer's web pages beside it and a broken file in it."""
    media = tmp_path / "cdrom"
    shutil.copytree(Path(get_testdata_file("DICOMDIR")).parent, media)
    (media / "IHE_PDI").mkdir()
    (media / "IHE_PDI" / "INDEX.HTM").write_text("<html>viewer</html>")
    (media / "README.TXT").write_text("Images of ...")
    (media / "BROKEN").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00broken")
    lib = elsewhere.login("lib")
    found = elsewhere.vault.intake.survey_media(lib, media)
    assert found.studies and sum(s.instances for s in found.studies) >= 30
    report = elsewhere.vault.intake.import_media(lib, media, None, Reconcile(outside_issuer="Outside Clinic"))
    assert report.imported == sum(s.instances for s in found.studies)
    assert [r.path.endswith("BROKEN") for r in report.rejected] == [True]  # quarantined, not lost
    elsewhere.add("tech", Role.TECHNOLOGIST)  # the quarantine is the technologists' to settle
    assert len(elsewhere.vault.intake.quarantined(elsewhere.login("tech"))) == 1


def test_a_file_set_missing_a_listed_file_imports_the_rest(elsewhere: VaultEnv, tmp_path: Path) -> None:
    """A DICOMDIR naming a file that is not on the media used to stop the whole import."""
    media = tmp_path / "cd"
    shutil.copytree(Path(get_testdata_file("DICOMDIR")).parent, media)
    listed = [Path(i.path) for i in FileSet(pydicom.dcmread(media / "DICOMDIR"))]
    listed[3].unlink()
    lib = elsewhere.login("lib")
    found = elsewhere.vault.intake.survey_media(lib, media / "DICOMDIR")
    assert sum(s.instances for s in found.studies) == len(listed) - 1 and found.unreadable == 1
    report = elsewhere.vault.intake.import_media(lib, media / "DICOMDIR")
    assert report.imported == len(listed) - 1
    assert [r.reason for r in report.rejected] == ["file listed in DICOMDIR is missing"]
    with pytest.raises(CustodianError, match="no such file or folder"):
        elsewhere.vault.intake.survey_media(lib, tmp_path / "not-there")


def test_a_deflated_bomb_on_media_is_neither_surveyed_nor_imported(elsewhere: VaultEnv,
                                                                   tmp_path: Path) -> None:
    """Surveying reads headers, and reconciling rewrites each file: pydicom would inflate the whole
    data set for either."""
    media = tmp_path / "usb"
    media.mkdir()
    deflated_bomb(media / "IM0001", pixel_bytes=256 * MiB)
    lib = elsewhere.login("lib")
    tracemalloc.start()
    try:
        found = elsewhere.vault.intake.survey_media(lib, media)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (found.studies, found.unreadable) == ([], 1) and peak < 64 * MiB
    report = elsewhere.vault.intake.import_media(lib, media, None, Reconcile(outside_issuer="Outside Clinic"))
    assert [r.reason for r in report.rejected] == [
        "it would inflate to more than 200 times its compressed size (site policy intake_expansion_max): "
        "refused as a decompression bomb"]
    assert elsewhere.vault._core.query("SELECT COUNT(*) FROM quarantine") == [(0,)]
