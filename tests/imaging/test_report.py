"""Reports read into items and text, held to DCMTK's dsrdump: every value and unit dsrdump prints
for a text, code, date, time, UID or measurement item is in Custodian's text under its concept.
Hostile reports (too deep, too many items, not a report, a damaged PDF) are refused plainly."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.imaging import report
from app.imaging.report import Item, PdfReport, StructuredReport, read_report, shown_unit
from tests.imaging import reports

IMAGE = ct_study(Patient("PID-R1", "Reportperson^Rita"), slices=1, size=16)[0]
# One content item as dsrdump prints it: <relationship TYPE:(code,scheme,"concept")=value>
DUMPED = re.compile(r'<(?:[a-z ]+ )?(?P<type>TEXT|NUM|CODE|DATE|TIME|DATETIME|UIDREF|PNAME):'
                    r'(?:\([^)]*,"(?P<concept>[^"]*)"\))?=(?P<value>.*?)>')


def dsrdump_expectations(path: Path) -> list[str]:
    """What Custodian's text must hold for each item of dsrdump's output ("Concept: value unit")."""
    dumped = subprocess.run(["dsrdump", str(path)], capture_output=True, check=True).stdout
    expected = []
    for found in DUMPED.finditer(dumped.decode("latin-1")):
        kind, concept, value = found["type"], found["concept"] or "", found["value"]
        if kind == "NUM":
            number, unit = re.match(r'"([^"]*)" \(([^,]*),', value).groups()  # type: ignore[union-attr]
            shown = f"{number} {shown_unit(unit)}".rstrip()  # (the code's usual symbol: HU)
        elif kind == "CODE":
            shown = re.search(r',"([^"]*)"\)$', value)[1]  # type: ignore[index]
        else:
            shown = value.split('"')[1]
        if "..." in shown or "\\" in shown:  # (dsrdump shortens long texts and escapes line breaks)
            continue
        expected.append(f"{concept}: {shown}")
    return expected


BUILT: dict[str, Callable[[Dataset], Dataset]] = {
    "basic text": reports.basic_text, "enhanced": reports.enhanced, "comprehensive": reports.comprehensive}


@pytest.mark.parametrize("name", [*BUILT, "pydicom's test SR"])
def test_the_text_holds_every_value_and_unit_dsrdump_prints(name: str, tmp_path: Path) -> None:
    if name in BUILT:
        path = tmp_path / "sr.dcm"
        path.write_bytes(to_bytes(BUILT[name](IMAGE)))
    else:
        path = Path(get_testdata_file("test-SR.dcm"))  # type: ignore[arg-type]
    expected = dsrdump_expectations(path)
    read = read_report(path.read_bytes())
    assert isinstance(read, StructuredReport)
    text = read.text()
    assert len(expected) >= 2
    assert [line for line in expected if line not in text] == []


def _items(item: Item) -> list[Item]:
    return [item, *(found for child in item.children for found in _items(child))]


def test_the_tree_keeps_headings_units_references_and_relationships() -> None:
    read = read_report(to_bytes(reports.enhanced(IMAGE)))
    assert isinstance(read, StructuredReport)
    lesion = read.root.children[0]
    assert (lesion.value_type, lesion.concept, lesion.relationship) == ("CONTAINER", "Lesion 1", "CONTAINS")
    assert [(i.concept, i.value, i.units) for i in lesion.children if i.value_type == "NUM"] == [
        ("Long axis", "23.5", "mm"), ("Attenuation", "41", "[hnsf'U]")]
    assert "  Lesion 1\n    Long axis: 23.5 mm\n" in read.text()

    read = read_report(to_bytes(reports.comprehensive(IMAGE)))
    assert isinstance(read, StructuredReport)
    (image,) = [i for i in _items(read.root) if i.value_type == "IMAGE"]
    assert image.references == (IMAGE.SOPInstanceUID,)
    assert read.evidence == {IMAGE.SOPInstanceUID: IMAGE.SeriesInstanceUID}
    assert read.header.title == "Imaging report" and read.header.patient_id == "PID-R1"

    read = read_report(Path(get_testdata_file("test-SR.dcm")).read_bytes())  # type: ignore[arg-type]
    assert isinstance(read, StructuredReport)
    relationships = {i.relationship for i in _items(read.root)}
    assert {"HAS OBS CONTEXT", "HAS CONCEPT MOD", "INFERRED FROM", "HAS PROPERTIES"} <= relationships


def test_an_encapsulated_pdf_is_its_document() -> None:
    read = read_report(to_bytes(reports.pdf_report(IMAGE, "Impression: normal")))
    assert isinstance(read, PdfReport)
    assert read.data == reports.pdf_bytes("Impression: normal")
    assert read.header.title == "Outside radiology report"
    assert f"{len(read.data):,} bytes" in read.text()


def test_what_is_not_a_report_is_refused_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CustodianError, match="not a report"):
        read_report(to_bytes(IMAGE))
    truncated = to_bytes(reports.basic_text(IMAGE))[:-20]
    with pytest.raises(CustodianError, match="malformed"):
        read_report(truncated)
    not_pdf = reports.pdf_report(IMAGE, "x")
    not_pdf.EncapsulatedDocument = b"<html></html>"
    with pytest.raises(CustodianError, match="not a PDF"):
        read_report(to_bytes(not_pdf))
    monkeypatch.setattr(report, "MAX_PDF_BYTES", 100)
    with pytest.raises(CustodianError, match="larger than"):
        read_report(to_bytes(reports.pdf_report(IMAGE, "x")))


def test_hostile_nesting_is_refused_and_the_deepest_allowed_is_read() -> None:
    deepest = read_report(to_bytes(reports.nested(IMAGE, report.MAX_DEPTH - 1)))
    assert isinstance(deepest, StructuredReport) and "deep" in deepest.text()
    with pytest.raises(CustodianError, match=f"deeper than {report.MAX_DEPTH} levels"):
        read_report(to_bytes(reports.nested(IMAGE, report.MAX_DEPTH)))


def test_a_hostile_item_count_is_refused_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # (the bound is lowered: a report of 10,000 items takes seconds to build in a test)
    monkeypatch.setattr(report, "MAX_ITEMS", 40)
    assert len(read_report(to_bytes(reports.flat(IMAGE, 39))).text().splitlines()) > 39  # type: ignore[union-attr]
    with pytest.raises(CustodianError, match="more than 40 items"):
        read_report(to_bytes(reports.flat(IMAGE, 40)))


def test_key_object_selections_and_images_are_not_reports() -> None:
    assert report.is_report(reports.BASIC) and report.is_report(reports.PDF)
    assert not report.is_report("1.2.840.10008.5.1.4.1.1.88.59")
    assert not report.is_report(str(pydicom.uid.CTImageStorage))


def test_units_read_as_a_reader_writes_them() -> None:
    """Hounsfield units show as HU, plain UCUM codes as they are; the tree keeps the code."""
    read = read_report(to_bytes(reports.enhanced(IMAGE)))
    assert isinstance(read, StructuredReport)
    assert "Attenuation: 41 HU" in read.text() and "[hnsf'U]" not in read.text()
    assert "Long axis: 23.5 mm" in read.text()
