"""Import of real-world and hostile input: pydicom's own test files, DICOMDIRs, damaged files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.fileset import FileSet

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from tests.conftest import VaultEnv, study_bytes, write_study


def test_every_pydicom_test_file_is_imported_or_rejected_with_a_reason(env: VaultEnv, tmp_path: Path) -> None:
    files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
    assert len(files) > 150
    report = env.vault.intake.import_paths(env.login("tech"), files)
    dicomdirs = sum(1 for f in files if f.name.upper().startswith("DICOMDIR"))
    # DICOMDIR files given by name stand for the files they list, which are imported too.
    assert report.imported + report.duplicates + len(report.rejected) >= len(files) - dicomdirs
    assert report.imported > 100  # several files are one object in different transfer syntaxes
    assert all(r.reason for r in report.rejected)
    reasons = {Path(r.path).name: r.reason for r in report.rejected}
    assert reasons["MR_truncated.dcm"] == "file is truncated"
    assert reasons["README.txt"] == "not a DICOM file"
    assert env.vault.admin.verify(env.login("admin")).damaged == []
    # Every imported image decodes (compressed ones through pylibjpeg/openjpeg) or says why not.
    rad = env.login("rad")
    opened, failed = 0, 0
    for study in env.vault.reading.studies(rad):
        for series in env.vault.reading.series(rad, study.study_uid):
            try:
                images = env.vault.reading.open_series(rad, series.series_uid)
            except Exception as exc:  # a series of non-images
                assert "no images" in str(exc)
                continue
            for i in range(len(images)):
                try:
                    images.render(i)
                    opened += 1
                except CustodianError as exc:
                    assert "could not be decoded" in str(exc)
                    failed += 1  # pydicom ships one JPEG file its decoders reject on purpose
    assert opened > 80 and failed <= 2


def test_damaged_files_are_quarantined_with_reasons(env: VaultEnv, tmp_path: Path) -> None:
    good = study_bytes(slices=3, size=32)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for label, data in good:
        (folder / f"{label}.dcm").write_bytes(data)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "text.dcm").write_text("hello")
    (folder / "truncated.dcm").write_bytes(good[0][1][: len(good[0][1]) // 2])
    header_only = good[1][1][:700]
    (folder / "header-only.dcm").write_bytes(header_only)
    no_uid = pydicom.dcmread(pydicom.filebase.DicomBytesIO(good[2][1]))
    del no_uid.SOPInstanceUID
    (folder / "no-uid.dcm").write_bytes(to_bytes(no_uid))
    no_rows = ct_study(Patient("PID-9", "Rowless^Ray"), slices=1, size=16)[0]
    del no_rows.Rows
    (folder / "no-rows.dcm").write_bytes(to_bytes(no_rows))
    report = env.vault.intake.import_paths(env.login("tech"), [folder])
    reasons = {Path(r.path).name: r.reason for r in report.rejected}
    assert report.imported == 3
    assert reasons == {
        "empty.dcm": "empty file",
        "text.dcm": "not a DICOM file",
        "truncated.dcm": "file is truncated inside the pixel data",
        "header-only.dcm": reasons["header-only.dcm"],
        "no-uid.dcm": "missing SOP Instance UID",
        "no-rows.dcm": "pixel data header is incomplete (no valid Rows)",
    }
    assert reasons["header-only.dcm"] in {"missing Study Instance UID", "invalid Study Instance UID",
                                          "missing Series Instance UID", "file is truncated"}
    assert len(env.vault.intake.quarantined(env.login("tech"))) == 6
    assert env.vault.admin.verify(env.login("admin")).damaged == []


def test_dicomdir_file_set(env: VaultEnv, tmp_path: Path) -> None:
    fs = FileSet()
    for ds in ct_study(Patient("PID-DD", "Directory^Dora"), slices=4, size=16):
        fs.add(ds)
    media = tmp_path / "media"
    fs.write(media)
    report = env.vault.intake.import_paths(env.login("tech"), [media / "DICOMDIR"])
    assert (report.imported, report.rejected) == (4, [])
    again = env.vault.intake.import_paths(env.login("tech"), [media])  # the folder walk finds the same
    assert (again.imported, again.duplicates, again.rejected) == (0, 4, [])


def test_pydicom_dicomdir(env: VaultEnv, tmp_path: Path) -> None:
    source = Path(get_testdata_file("DICOMDIR")).parent
    shutil.copytree(source, tmp_path / "dd")
    report = env.vault.intake.import_paths(env.login("tech"), [tmp_path / "dd" / "DICOMDIR"])
    assert report.imported > 20


def test_missing_paths_and_unreadable_files(env: VaultEnv, tmp_path: Path) -> None:
    locked = tmp_path / "locked.dcm"
    locked.write_bytes(study_bytes(slices=1, size=16)[0][1])
    os.chmod(locked, 0)
    report = env.vault.intake.import_paths(env.login("tech"), [tmp_path / "nope", locked])
    reasons = sorted(r.reason for r in report.rejected)
    assert reasons[0] == "no such file or folder" or "could not be read" in reasons[0]
    assert report.imported in (0, 1)  # root may read a mode-000 file


@pytest.mark.slow
def test_folder_of_ten_thousand_files(env: VaultEnv, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    write_study(folder / "study", slices=5, size=16)
    for i in range(10_000 - 5):
        sub = folder / f"d{i // 1000}"
        if i % 1000 == 0:
            sub.mkdir()
        (sub / f"f{i}").write_bytes(b"junk %d" % i)
    seen: list[int] = []
    report = env.vault.intake.import_paths(env.login("tech"), [folder], progress=lambda d, t: seen.append(t))
    assert report.imported == 5 and len(report.rejected) == 9995
    assert seen[-1] == 10_000 and len(seen) == 10_000
