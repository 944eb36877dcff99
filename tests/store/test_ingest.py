"""The import parser: its fast header reading agrees with pydicom's own conversion."""

from __future__ import annotations

import io
import json
import tracemalloc
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from app.store.ingest import HEADER_BYTES, DicomDirectory, Rejected, parse
from app.store.limits import OverLimit
from tests.stress.bombs import MiB, deflated_bomb

FIELDS = {
    "patient_id": "PatientID", "patient_name": "PatientName", "birth_date": "PatientBirthDate",
    "sex": "PatientSex", "study_date": "StudyDate", "study_time": "StudyTime",
    "accession": "AccessionNumber", "study_description": "StudyDescription",
    "referring": "ReferringPhysicianName", "modality": "Modality",
    "series_description": "SeriesDescription", "body_part": "BodyPartExamined",
    "sop_uid": "SOPInstanceUID", "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID",
}
NUMBERS = {"series_number": "SeriesNumber", "instance_number": "InstanceNumber", "rows": "Rows",
           "columns": "Columns", "bits_allocated": "BitsAllocated", "window_center": "WindowCenter",
           "rescale_slope": "RescaleSlope", "rescale_intercept": "RescaleIntercept"}


def _first(value: object) -> object:
    if isinstance(value, pydicom.multival.MultiValue):
        return value[0] if value else None
    return value


def _parsed_files() -> list[Path]:
    return [Path(f) for f in get_testdata_files() if Path(f).is_file()]


@pytest.mark.parametrize("path", _parsed_files(), ids=lambda p: p.name)
def test_header_fields_match_pydicom(path: Path) -> None:
    data = path.read_bytes()
    try:
        parsed = parse(data)
    except (Rejected, DicomDirectory):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(parsed.data), force=True)
    for field, keyword in FIELDS.items():
        expected = _first(ds.get(keyword))
        assert getattr(parsed, field) == ("" if expected is None else str(expected).strip(" \0")), field
    for field, keyword in NUMBERS.items():
        expected = _first(ds.get(keyword))
        ours = getattr(parsed, field)
        if expected in (None, ""):
            assert ours is None or field in {"rows", "columns", "bits_allocated"}, field
        else:
            assert ours == pytest.approx(float(expected)), field
    if parsed.pixel_spacing:
        assert json.loads(parsed.pixel_spacing) == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_non_ascii_names_are_decoded_with_the_character_set() -> None:
    from app.demo.studies import Patient, ct_study, to_bytes

    for charset in ("ISO_IR 192", "ISO_IR 100"):
        ds = ct_study(Patient("PID-1", "Müller^Zoë"), slices=1, size=8)[0]
        ds.SpecificCharacterSet = charset
        data = to_bytes(ds)
        assert ("Müller".encode("latin-1") in data) == (charset == "ISO_IR 100")
        assert parse(data).patient_name == "Müller^Zoë"


def test_a_deflated_data_set_is_indexed_from_its_inflated_header(tmp_path: Path) -> None:
    data = deflated_bomb(tmp_path / "small.dcm", pixel_bytes=8 * MiB).read_bytes()  # within the limits
    parsed = parse(data)
    assert parsed.transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert (parsed.rows, parsed.columns, parsed.frames) == (512, 512, 16)
    assert parsed.data == data and parsed.patient_id == "BOMB-1"  # stored as it came
    with pytest.raises(Rejected, match="truncated or malformed"):
        parse(data[:-1000])


def test_a_deflated_bomb_is_refused_as_it_inflates_in_bounded_memory(tmp_path: Path) -> None:
    """pydicom alone inflates the whole data set in memory (here 256 MiB, in the issue 1 GiB)."""
    data = deflated_bomb(tmp_path / "bomb.dcm", pixel_bytes=256 * MiB).read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(OverLimit, match="refused as a decompression bomb"):
            parse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) < MiB and peak < HEADER_BYTES + 8 * MiB
