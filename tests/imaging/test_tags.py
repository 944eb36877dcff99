"""The tag browser's rows, built Qt-free: sequences as nested rows, binary values summarised,
long values cut, and what a role may not be shown withheld before any screen sees it."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.tags import VALUE_CHARS, WITHHELD, matching, read_attributes, tag_rows
from app.security.roles import Field


def _dataset() -> Dataset:
    ds = ct_study(Patient("P-TAGS", "Tag^Tessa"), slices=1, size=8)[0]
    ds.PatientAddress = "1 Main Street"
    ds.StudyDescription = "x" * 200
    item = Dataset()
    item.CodeValue, item.CodeMeaning = "T-D0010", "Abdomen"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.ReferencedPatientSequence = Sequence([Dataset()])
    ds.ReferencedPatientSequence[0].PatientName = "Tag^Tessa"
    ds.add_new(0x00291010, "OB", b"\x01" * 12)
    return read_attributes(to_bytes(ds))  # as the vault reads it back


def _by_keyword(rows: list, keyword: str) -> list:
    return [r for r in rows if r.keyword == keyword]


def test_every_attribute_with_sequences_nested_and_values_summarised() -> None:
    rows = tag_rows(_dataset(), frozenset(Field))
    (modality,) = _by_keyword(rows, "Modality")
    assert (modality.depth, modality.tag, modality.vr, modality.value) == (0, "(0008,0060)", "CS", "CT")
    (pixels,) = _by_keyword(rows, "PixelData")
    assert pixels.value == f"<{8 * 8 * 2} bytes>"
    (description,) = _by_keyword(rows, "StudyDescription")
    assert len(description.value) == VALUE_CHARS and description.value.endswith("…")
    region = rows.index(_by_keyword(rows, "AnatomicRegionSequence")[0])
    assert [(r.depth, r.keyword, r.value) for r in rows[region:region + 4]] == [
        (0, "AnatomicRegionSequence", "1 item"), (1, "Item 1", "2 attributes"),
        (2, "CodeValue", "T-D0010"), (2, "CodeMeaning", "Abdomen")]
    assert [r.value for r in _by_keyword(rows, "PatientName")] == ["Tag^Tessa", "Tag^Tessa"]
    assert _by_keyword(rows, "PatientAddress")[0].value == "1 Main Street"


def test_what_the_role_may_not_see_is_withheld_wherever_it_is() -> None:
    rows = tag_rows(_dataset(), frozenset({Field.PATIENT_ID}))
    assert all(r.value == WITHHELD for r in _by_keyword(rows, "PatientName"))  # in a sequence too
    assert [r.value for r in _by_keyword(rows, "PatientID")] == ["P-TAGS"]
    assert _by_keyword(rows, "PatientBirthDate")[0].value == WITHHELD
    # beyond the five fields, and private attributes, only for a role shown every field
    assert _by_keyword(rows, "PatientAddress")[0].value == WITHHELD
    (private,) = [r for r in rows if r.tag == "(0029,1010)"]
    assert private.value == WITHHELD
    assert _by_keyword(rows, "Modality")[0].value == "CT"
    assert WITHHELD not in {r.value for r in tag_rows(_dataset(), frozenset(Field))}


def test_the_filter_keeps_the_sequences_a_match_sits_in() -> None:
    rows = tag_rows(_dataset(), frozenset(Field))
    assert [r.keyword for r in matching(rows, "abdomen")] == ["AnatomicRegionSequence", "Item 1",
                                                              "CodeMeaning"]
    assert [r.keyword for r in matching(rows, "0008,0060")] == ["Modality"]
    assert [r.keyword for r in matching(rows, "00080060")] == ["Modality"]
    assert matching(rows, "  ") == rows and matching(rows, "no such text anywhere") == []
