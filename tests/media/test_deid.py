"""De-identification of every instance among pydicom's own test files, checked with the tools a
recipient's reader trusts: dciodvfy (dicom3tools) finds no error the source did not already have,
dcmftest (DCMTK) finds a Part 10 file, and no value that identifies the patient or the original
instances is left."""

from __future__ import annotations

import functools
import io
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.errors import CustodianError
from app.media.deid import Deidentifier, DeidOptions, DeidRefused

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
OPTIONS = [DeidOptions(), DeidOptions(retain_dates=True), DeidOptions(clean_descriptors=True),
           DeidOptions(retain_dates=True, clean_descriptors=True)]
# Not instances (datasets without a SOP Instance UID) and cut-off files: refused, never half done.
FRAGMENTS = ("UN_sequence.dcm", "empty_charset_LEI.dcm", "meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm",
             "no_meta_group_length.dcm", "priv_SQ.dcm")
REFUSED = {"MR_truncated.dcm": "truncated", "rtplan_truncated.dcm": "truncated",
           "no_meta.dcm": "truncated",  # a stray first byte: read as one element longer than the file
           **dict.fromkeys(FRAGMENTS, "no SOP Instance UID")}
# Instances the vault keeps as received, without a Part 10 header, and the syntax they are in.
BARE = {"ExplVR_BigEndNoMeta.dcm": ExplicitVRBigEndian, "ExplVR_LitEndNoMeta.dcm": ExplicitVRLittleEndian,
        "rtstruct.dcm": ImplicitVRLittleEndian}
# Values that name the patient or the place, looked for in every text value of the result.
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
               "PatientAddress", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
               "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "StationName",
               "AccessionNumber", "DeviceSerialNumber", "StudyID")
U_TAGS = {(g << 16) | e for g, e in table.U_TAGS} | {0x00089123}  # Creator-Version UID is U too
TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}


def _named(options: DeidOptions) -> str:
    return f"dates{int(options.retain_dates)}-descriptors{int(options.clean_descriptors)}"


def _readable(path: Path) -> bool:
    try:
        pydicom.dcmread(path, force=True)
    except Exception:
        return False
    return True


FILES = sorted(p for p in TEST_FILES.glob("*.dcm") if _readable(p))
INSTANCES = [p for p in FILES if p.name not in REFUSED]


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    for tool, package in (("dciodvfy", "dicom3tools"), ("dcmftest", "dcmtk")):
        assert shutil.which(tool), f"{tool} is needed (Debian package {package}; installer/setup.sh)"


def _normalised(line: str) -> str:
    """An error line without the values and positions it quotes, which de-identification changes."""
    line = re.sub(r'"[^"]*"', '"…"', line)
    line = re.sub(r"= <[^>]*>", "= <…>", line)
    line = re.sub(r"<[^A-Za-z>][^>]*>", "<…>", line)
    line = re.sub(r"\b\d+(\.\d+)+\b", "#", line)
    return re.sub(r"(?<!Type )\b\d+\b", "#", line)


def _errors(path: Path) -> set[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace",
                         timeout=120, check=False)
    return {_normalised(line.strip()) for line in (run.stderr + run.stdout).splitlines()
            if line.startswith("Error")}


@functools.cache
def _source_errors(name: str) -> frozenset[str]:
    return frozenset(_errors(TEST_FILES / name))


def _everything(ds: Dataset) -> Iterator[DataElement]:
    yield from ds.file_meta.iterall() if getattr(ds, "file_meta", None) else ()
    yield from ds.iterall()


def _strings(element: DataElement) -> list[str]:
    value = element.value
    if value is None or value == "":
        return []
    return [str(v) for v in value] if element.VM > 1 else [str(value)]


def _deidentified(path: Path, options: DeidOptions, deid: Deidentifier | None = None) -> bytes:
    return (deid or Deidentifier(options)).dataset(path.read_bytes(), "patient-1")


@pytest.mark.parametrize("options", OPTIONS, ids=_named)
@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_result_is_as_valid_as_the_source_and_part10(path: Path, options: DeidOptions,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    out.write_bytes(_deidentified(path, options))
    added = _errors(out) - _source_errors(path.name)
    assert not added, f"dciodvfy errors the source did not have: {sorted(added)}"
    verdict = subprocess.run(["dcmftest", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert verdict.stdout.startswith("yes:"), verdict.stdout


@pytest.mark.parametrize("options", OPTIONS, ids=_named)
@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_no_identifying_value_is_left(path: Path, options: DeidOptions) -> None:
    deid = Deidentifier(options)
    source = pydicom.dcmread(path, force=True)
    result = pydicom.dcmread(io.BytesIO(_deidentified(path, options, deid)))  # Part 10: no force
    elements = list(_everything(result))
    # Dates and times are compared whole: a shifted date may hold a short ID's digits by chance
    # ('204' in 20120405), and the date checks below are what keeps the originals out.
    timed = {"DA", "DT", "TM"}
    texts = [s for e in elements if e.VR in TEXT_VRS - timed for s in _strings(e)]
    moments = {s.strip() for e in elements if e.VR in timed for s in _strings(e)}
    secrets = {s.strip() for e in source.iterall() if e.keyword in IDENTIFYING for s in _strings(e)}
    kept = " ".join(str(source.get(k, "")) for k in ("Manufacturer", "ManufacturerModelName"))
    for secret in {s for s in secrets if len(s) >= 3 and s not in kept}:  # a station named for its maker
        assert not [t for t in texts if secret in t], f"{secret!r} is still in the result"
        assert secret not in moments, f"{secret!r} is still in the result"
    originals = {s for e in _everything(source) if int(e.tag) in U_TAGS for s in _strings(e)}
    remapped = {deid.uid(u) for u in originals}
    uids = {s for e in elements if int(e.tag) in U_TAGS for s in _strings(e)}
    assert not uids & originals and uids <= remapped  # each UID replaced by its export-wide mapping
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        if source.get(keyword):
            assert result[keyword].value == deid.uid(source[keyword].value)
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert result.file_meta.MediaStorageSOPClassUID == result.SOPClassUID == source.SOPClassUID
    assert not [e.tag for e in elements if e.tag.group >> 8 in (0x50, 0x60) or e.tag.is_private]
    if not options.retain_dates:
        dates = {s[:8] for e in source.iterall() if e.VR in ("DA", "DT") for s in _strings(e)} - {"19000101"}
        assert not [e for e in elements if e.VR in ("DA", "DT") and {s[:8] for s in _strings(e)} & dates]
    for keyword in ("Manufacturer", "ManufacturerModelName", "BodyPartExamined", "Modality", "Rows"):
        if keyword in source:  # not in Table E.1-1: the profile keeps them
            assert result[keyword].value == source[keyword].value, keyword
    assert result.PatientIdentityRemoved == "YES" and len(result.DeidentificationMethod) <= 64


@pytest.mark.parametrize("path", [p for p in FILES if p.name in REFUSED], ids=lambda p: p.name)
def test_fragments_and_cut_files_are_refused_with_a_plain_reason(path: Path) -> None:
    with pytest.raises(DeidRefused, match=REFUSED[path.name]) as refused:
        _deidentified(path, DeidOptions())
    assert isinstance(refused.value, CustodianError)


@pytest.mark.parametrize("name", sorted(BARE))
def test_an_instance_without_part10_header_gets_a_correct_one(name: str) -> None:
    path = TEST_FILES / name
    assert path.read_bytes()[128:132] != b"DICM"
    result = pydicom.dcmread(io.BytesIO(_deidentified(path, DeidOptions())))
    source = pydicom.dcmread(path, force=True)
    assert result.preamble == bytes(128)
    assert result.file_meta.TransferSyntaxUID == BARE[name]
    assert result.original_encoding == source.original_encoding
    assert result.file_meta.MediaStorageSOPClassUID == source.SOPClassUID
    assert result.SOPInstanceUID != source.SOPInstanceUID
    assert result.PatientName != source.get("PatientName")


def test_compressed_pixels_are_passed_on_untouched() -> None:
    compressed = [p for p in INSTANCES
                  if p.name not in BARE and pydicom.dcmread(p).file_meta.TransferSyntaxUID.is_compressed]
    assert len(compressed) > 20
    for path in compressed:
        source = pydicom.dcmread(path)
        result = pydicom.dcmread(io.BytesIO(_deidentified(path, DeidOptions())))
        assert result.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert result.PixelData == source.PixelData


def test_references_between_instances_stay_intact_within_an_export() -> None:
    """Creator-Version UID is U in Table E.1-1 (dicom-anonymizer's table lacks it); UIDs inside
    sequences are remapped like the instances they name."""
    deid = Deidentifier()
    first = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    second = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    second.SOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = first.SOPClassUID, first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([item])
    second.CreatorVersionUID = "1.2.826.0.1.3680043.2.1143.107.104.103.115"
    out = [pydicom.dcmread(io.BytesIO(deid.dataset(_bytes(ds), "p"))) for ds in (first, second)]
    [reference] = out[1].ReferencedImageSequence
    assert reference.ReferencedSOPInstanceUID == out[0].SOPInstanceUID != first.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == first.SOPClassUID  # a class is not an instance: kept
    assert out[1].CreatorVersionUID == deid.uid(second.CreatorVersionUID) != second.CreatorVersionUID
    assert out[0].StudyInstanceUID == out[1].StudyInstanceUID == deid.uid(first.StudyInstanceUID)
    other = pydicom.dcmread(io.BytesIO(Deidentifier().dataset(_bytes(first), "p")))
    assert other.SOPInstanceUID != out[0].SOPInstanceUID  # another export: unlinkable


SAMPLES = {"DA": "20240229", "DT": "20240229101500", "TM": "101500", "LO": "Site 7 of Kowalski",
           "SH": "KOWALSKI-7", "LT": "Seen by Dr Kowalski", "ST": "Kowalski", "UT": "Kowalski text",
           "PN": "Kowalski^Anna", "UI": "1.2.3.4.5.6.7", "CS": "KOWALSKI", "AE": "KOWALSKI_AE",
           "OB": b"KOWALSKI", "UN": b"KOWALSKI", "UR": "http://kowalski.example/x"}


def test_each_action_leaves_what_the_attribute_type_allows() -> None:
    """D: a non-empty dummy of the VR, for every D attribute of Table E.1-1; a Type 1 attribute
    with X or Z: a dummy too; a Type 2 one: empty; an optional one: removed."""
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    originals: dict[int, object] = {}
    for group, element in table.D_TAGS:
        tag = (group << 16) | element
        vr = dictionary_VR(tag)
        if vr in SAMPLES:
            ds.add_new(tag, vr, SAMPLES[vr])
            originals[tag] = SAMPLES[vr]
    assert len(originals) > 70
    ds.ContentDate, ds.DeviceSerialNumber, ds.SeriesDate = "20240229", "SN-4711-XY", "20240229"  # Type 1
    ds.OperatorsName, ds.StationName = "Nurse^Jane", "CT-ROOM-3"  # Type 2 (RT Series) and optional
    ds.PatientSex, ds.InstitutionName = "F", "St Elsewhere"
    observer = _item(VerifyingObserverName="Kowalski^Jan",
                     PersonIdentificationCodeSequence=[_concept("K-7", "Kowalski")])
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.ContentSequence = Sequence([_item(RelationshipType="CONTAINS", ValueType="TEXT",
                                         ConceptNameCodeSequence=[_concept("121071", "Finding")],
                                         TextValue="Mrs Kowalski fell off her bike")])
    result = pydicom.dcmread(io.BytesIO(Deidentifier().dataset(_bytes(ds), "p")))
    for tag, value in originals.items():
        assert tag in result and not result[tag].is_empty, f"{result[tag] if tag in result else hex(tag)}"
        if not isinstance(value, bytes):
            assert str(result[tag].value) != str(value), hex(tag)
    assert result.ContentDate == result.SeriesDate == "19000101" and result.DeviceSerialNumber == "ANONYMIZED"
    assert result["OperatorsName"].is_empty and result["PatientSex"].is_empty
    assert "StationName" not in result and "InstitutionName" not in result
    [observer] = result.VerifyingObserverSequence  # D: the items' content replaced, their form kept
    [person] = observer.PersonIdentificationCodeSequence
    assert observer.VerifyingObserverName == "ANONYMOUS" and person.CodeValue == "ANONYMIZED"
    [finding] = result.ContentSequence
    assert finding.TextValue == "ANONYMIZED" and finding.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert "KOWALSKI" not in repr(result).upper()


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, Sequence(value) if isinstance(value, list) else value)
    return item


def _concept(value: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator="99TEST", CodeMeaning=meaning)


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_bad_data_is_refused_and_never_fails_otherwise() -> None:
    """Whatever the bytes (cut anywhere, bits flipped), the result is an instance or DeidRefused."""
    for data in (b"", b"not dicom at all", bytes(200), b"\0" * 128 + b"DICM" + b"\xff" * 50):
        with pytest.raises(DeidRefused):
            Deidentifier().dataset(data, "p")
    rng = random.Random(19)
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "rtstruct.dcm", "test-SR.dcm", "rtplan.dcm"):
        whole = (TEST_FILES / name).read_bytes()
        source = pydicom.dcmread(TEST_FILES / name, force=True)
        names = {str(source.get("PatientName", "")), str(source.get("PatientID", ""))} - {""}
        assert names
        for _ in range(60):
            data = bytearray(whole)
            if rng.random() < 0.5:
                del data[rng.randrange(1, len(data)):]
            else:
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                Deidentifier().dataset(bytes(data), "p")
            except DeidRefused as refused:
                reason = str(refused)
                assert re.fullmatch(r"[a-z][\w ,:()-]*", reason) and not [n for n in names if n in reason]
