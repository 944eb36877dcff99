"""A study's reports as a reader sees them: structured reports (Basic Text, Enhanced, Comprehensive
SR) as a tree of headed items rendered as indented text, and encapsulated PDF reports as their bytes.

Reports arrive from outside, so a hostile file must not cost unbounded work: the tree is walked to
:data:`MAX_DEPTH` levels and :data:`MAX_ITEMS` items at most and a PDF is taken up to
:data:`MAX_PDF_BYTES`; beyond that the report is refused with a plain sentence. Nothing here knows
users: the vault decides who reads a report and which demographics its header shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from app.errors import CustodianError

MAX_DEPTH = 64  # levels of nested content items (real reports use fewer than ten)
MAX_ITEMS = 10_000  # content items in one report (a CAD or measurement report has hundreds)
MAX_PDF_BYTES = 64 << 20
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_KEY_OBJECTS = "1.2.840.10008.5.1.4.1.1.88.59"  # a key image note is a selection, not a report
_REFERENCES = frozenset({"IMAGE", "COMPOSITE", "WAVEFORM"})
INDENT = "  "


def is_report(sop_class: str) -> bool:
    """A structured report or an encapsulated PDF (key object selections are image selections)."""
    return sop_class == PDF_CLASS or (sop_class.startswith(_SR_PREFIX) and sop_class != _KEY_OBJECTS)


@dataclass(frozen=True)
class Item:
    """One content item: its concept (the heading of a container), its value as text with the
    units of a measurement, the instances it refers to, and its children."""

    value_type: str
    relationship: str  # "CONTAINS", "HAS PROPERTIES"... ("" for the root)
    concept: str
    value: str = ""
    units: str = ""
    references: tuple[str, ...] = ()  # referenced SOP Instance UIDs (IMAGE, COMPOSITE, WAVEFORM)
    children: tuple[Item, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"value_type": self.value_type, "relationship": self.relationship, "concept": self.concept,
                "value": self.value, "units": self.units, "references": list(self.references),
                "children": [child.as_dict() for child in self.children]}


@dataclass(frozen=True)
class Header:
    """The report's header. The demographic fields carry the names :func:`app.security.roles.blanked`
    knows, so the vault blanks what a role may not see before the header leaves it."""

    sop_uid: str
    series_uid: str
    kind: str  # the SOP class's name ("Comprehensive SR Storage", "Encapsulated PDF Storage")
    title: str
    date: str
    patient_name: str | None
    patient_id: str | None
    birth_date: str | None
    sex: str | None
    accession: str | None


@dataclass(frozen=True)
class StructuredReport:
    header: Header
    completion: str
    verification: str
    root: Item
    evidence: dict[str, str] = field(default_factory=dict)  # referenced SOP Instance UID -> its series

    def text(self) -> str:
        """The report as indented plain text: headings, then their items one level in."""
        return "\n".join([*_header_lines(self.header),
                          f"Completion: {self.completion or '—'}; verification: {self.verification or '—'}",
                          "", *_item_lines(self.root, 0)])

    def as_dict(self) -> dict[str, object]:
        return {"format": "SR", **vars(self.header), "completion": self.completion,
                "verification": self.verification, "content": self.root.as_dict(), "evidence": self.evidence}


@dataclass(frozen=True)
class PdfReport:
    header: Header
    data: bytes = field(repr=False)

    def text(self) -> str:
        return "\n".join([*_header_lines(self.header), f"Encapsulated PDF, {len(self.data):,} bytes "
                          "(open it in the workstation)"])

    def as_dict(self) -> dict[str, object]:
        return {"format": "PDF", **vars(self.header), "size": len(self.data)}


Report = StructuredReport | PdfReport


def read_report(data: bytes) -> Report:
    """The report in one stored instance; CustodianError, in plain words, for anything else."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        sop_class = str(ds.get("SOPClassUID", ""))
    except Exception as exc:  # pydicom's messages are technical and may quote the data
        raise CustodianError("This report could not be read: its DICOM data is damaged.") from exc
    if not is_report(sop_class):
        raise CustodianError("This instance is not a report (neither a structured report nor a PDF).")
    try:
        if sop_class == PDF_CLASS:
            return PdfReport(_header(ds, sop_class), _pdf_bytes(ds))
        return StructuredReport(_header(ds, sop_class), _text(ds, "CompletionFlag"),
                                _text(ds, "VerificationFlag"), _walk(ds, "", 0, [0]), _evidence(ds))
    except CustodianError:
        raise
    except Exception as exc:  # (an element read lazily may be truncated or malformed anywhere)
        raise CustodianError("This report could not be read: its content is malformed.") from exc


def _evidence(ds: Dataset) -> dict[str, str]:
    """The series of each instance the report cites, from its evidence lists (required of a report
    that cites instances), so a reference opens in its series; within :data:`MAX_ITEMS`."""
    found: dict[str, str] = {}
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(keyword) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                for instance in series.get("ReferencedSOPSequence") or []:
                    if len(found) >= MAX_ITEMS:
                        return found
                    found[_text(instance, "ReferencedSOPInstanceUID")] = _text(series, "SeriesInstanceUID")
    return found


def _header(ds: Dataset, sop_class: str) -> Header:
    title = _meaning(ds.get("ConceptNameCodeSequence")) or _text(ds, "DocumentTitle") \
        or _text(ds, "SeriesDescription") or "Report"
    name = ds.get("PatientName")
    return Header(_text(ds, "SOPInstanceUID"), _text(ds, "SeriesInstanceUID"),
                  UID(sop_class).name.replace(" Storage", ""), title,
                  _text(ds, "ContentDate") or _text(ds, "StudyDate"),
                  str(name.formatted("%(family_name)s, %(given_name)s")).strip(", ") if name else "",
                  _text(ds, "PatientID"), _text(ds, "PatientBirthDate"), _text(ds, "PatientSex"),
                  _text(ds, "AccessionNumber"))


def _pdf_bytes(ds: Dataset) -> bytes:
    element = ds.get("EncapsulatedDocument")
    if element is None or not isinstance(element, bytes):
        raise CustodianError("This PDF report holds no document.")
    if len(element) > MAX_PDF_BYTES:
        raise CustodianError(f"This PDF report is larger than {MAX_PDF_BYTES >> 20} MB; it is not shown.")
    size = int(ds.get("EncapsulatedDocumentLength") or len(element))  # (the value is padded to even)
    document = bytes(element[:size])
    if not document.startswith(b"%PDF"):
        raise CustodianError("This PDF report's document is not a PDF file.")
    return document


def _walk(ds: Dataset, relationship: str, depth: int, count: list[int]) -> Item:
    """One content item and, depth first, its children, within the bounds."""
    count[0] += 1
    if count[0] > MAX_ITEMS:
        raise CustodianError(f"This structured report has more than {MAX_ITEMS:,} items; it is not shown.")
    if depth > MAX_DEPTH:
        raise CustodianError(f"This structured report nests deeper than {MAX_DEPTH} levels; it is not shown.")
    value_type = _text(ds, "ValueType") or ("BY REFERENCE" if "ReferencedContentItemIdentifier" in ds else "")
    value, units, references = _value(ds, value_type)
    children: Sequence = ds.get("ContentSequence") or Sequence()
    return Item(value_type, relationship, _meaning(ds.get("ConceptNameCodeSequence")), value, units,
                references, tuple(_walk(child, _text(child, "RelationshipType"), depth + 1, count)
                                  for child in children))


def _value(ds: Dataset, value_type: str) -> tuple[str, str, tuple[str, ...]]:
    """An item's value as text, its units (NUM) and the instances it refers to."""
    if value_type == "NUM":
        measured = ds.get("MeasuredValueSequence") or [Dataset()]
        number = measured[0].get("NumericValue")
        units = measured[0].get("MeasurementUnitsCodeSequence")
        return ("" if number is None else str(number)), (_code_value(units) if units else ""), ()
    if value_type in _REFERENCES:
        refs = ds.get("ReferencedSOPSequence") or []
        uids = tuple(_text(ref, "ReferencedSOPInstanceUID") for ref in refs)
        kinds = ", ".join(UID(_text(ref, "ReferencedSOPClassUID")).name for ref in refs)
        return kinds, "", tuple(uid for uid in uids if uid)
    if value_type == "BY REFERENCE":
        return "see item " + ".".join(str(n) for n in ds.ReferencedContentItemIdentifier), "", ()
    keyword = {"TEXT": "TextValue", "DATE": "Date", "TIME": "Time", "DATETIME": "DateTime",
               "PNAME": "PersonName", "UIDREF": "UID", "SCOORD": "GraphicType", "SCOORD3D": "GraphicType",
               "TCOORD": "TemporalRangeType"}.get(value_type)
    if keyword is not None:
        return _text(ds, keyword), "", ()
    if value_type == "CODE":
        return _meaning(ds.get("ConceptCodeSequence")), "", ()
    return "", "", ()


def _header_lines(header: Header) -> list[str]:
    parts = (header.patient_name, header.patient_id and f"ID {header.patient_id}",
             header.birth_date and f"born {header.birth_date}", header.sex and f"sex {header.sex}")
    patient = "; ".join(part for part in parts if part)
    return [f"{header.title} ({header.kind}, {header.date or 'undated'})",
            *([f"Patient: {patient}"] if patient else []),
            *([f"Accession: {header.accession}"] if header.accession else [])]


# UCUM units whose code is an annotation in brackets, as a reader writes them ("[hnsf'U]" is HU)
_UNIT_SYMBOLS = {"[hnsf'U]": "HU", "{ratio}": "", "1": "", "[iU]": "IU", "[ppm]": "ppm", "[deg]": "°"}


def shown_unit(units: str) -> str:
    """A measurement's unit as a reader writes it: the UCUM code itself ("mm", "cm2", "ml/s"), but
    its usual symbol where the code is an annotation ("HU", not "[hnsf'U]")."""
    return _UNIT_SYMBOLS.get(units, units)


_RELATIONSHIPS = {"HAS PROPERTIES": "property", "HAS CONCEPT MOD": "modifier", "HAS OBS CONTEXT": "context",
                  "HAS ACQ CONTEXT": "acquisition context", "INFERRED FROM": "inferred from",
                  "SELECTED FROM": "selected from"}


def _item_lines(item: Item, depth: int) -> list[str]:
    """An item as text: a container is a heading over its children; any other item a line."""
    pad = INDENT * depth
    note = f" [{_RELATIONSHIPS[item.relationship]}]" if item.relationship in _RELATIONSHIPS else ""
    if item.value_type == "CONTAINER":
        lines = [f"{pad}{item.concept}{note}"] if item.concept else []
        inner = depth + 1 if item.concept else depth
    else:
        value = " ".join(filter(None, (item.value, shown_unit(item.units))))
        if item.references:
            value += (" " if value else "") + "(" + ", ".join(item.references) + ")"
        label = item.concept or item.value_type.capitalize()
        first, *rest = (value or "—").splitlines() or [""]
        lines = [f"{pad}{label}: {first}{note}", *(f"{pad}{INDENT}{line}" for line in rest)]
        inner = depth + 1
    return lines + [line for child in item.children for line in _item_lines(child, inner)]


def _meaning(codes: Sequence | None) -> str:
    return _text(codes[0], "CodeMeaning") if codes else ""


def _code_value(codes: Sequence) -> str:
    """A measurement's unit as written: the UCUM code ("mm", "cm2"), else the code's meaning."""
    return _text(codes[0], "CodeValue") or _meaning(codes)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()
