"""One instance's attributes as the rows of a tag browser, with minimum necessary applied.

The rows are built inside the vault, so a value the role may not be shown is replaced by
:data:`WITHHELD` before it leaves: it never reaches a screen model. The five demographic fields of
:mod:`app.security.roles` decide, attribute by attribute; attributes that identify the patient
beyond them (address, telephone, other names...) and private attributes, whose content nobody can
vouch for, are shown only to a role shown every field.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from app.errors import CustodianError
from app.security.roles import Field

WITHHELD = "(withheld)"
VALUE_CHARS = 80  # a value longer than this is cut, with an ellipsis
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

_NAME, _ID = frozenset({Field.PATIENT_NAME}), frozenset({Field.PATIENT_ID})
_BIRTH = frozenset({Field.BIRTH_DATE})
_EVERY = frozenset(Field)
# The fields a role must be shown to see each identifying attribute, by keyword.
IDENTIFYING: dict[str, frozenset[Field]] = {
    "PatientName": _NAME, "OtherPatientNames": _NAME, "PatientBirthName": _NAME,
    "PatientMotherBirthName": _NAME,
    "PatientID": _ID, "IssuerOfPatientID": _ID, "OtherPatientIDs": _ID, "OtherPatientIDsSequence": _ID,
    "MedicalRecordLocator": _ID,
    "PatientBirthDate": _BIRTH, "PatientBirthTime": _BIRTH,
    "PatientSex": frozenset({Field.SEX}),
    "AccessionNumber": frozenset({Field.ACCESSION}),
    **{keyword: _EVERY for keyword in (
        "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "PatientComments",
        "PatientInsurancePlanCodeSequence", "MilitaryRank", "BranchOfService", "RegionOfResidence",
        "CountryOfResidence", "PatientReligiousPreference", "ResponsiblePerson",
        "PersonTelephoneNumbers", "PersonAddress")},
}


@dataclass(frozen=True)
class TagRow:
    """One line of the browser: an attribute, or an item of the sequence above it (no tag)."""

    depth: int
    tag: str  # "(0010,0010)"; "" for a sequence item
    vr: str
    keyword: str  # the attribute's keyword (its name for a private one), or "Item 3"
    value: str  # shortened; binary values as "<N bytes>", sequences as "N items"

    def matches(self, text: str) -> bool:
        """Whether ``text`` (any case) is in the tag (with or without punctuation), keyword or value."""
        needle = text.strip().lower()
        bare = self.tag.strip("()").replace(",", "")
        return any(needle in part.lower() for part in (self.tag, bare, self.keyword, self.value))


def read_attributes(data: bytes) -> Dataset:
    """The dataset of a stored instance (Part 10 or bare); the message never quotes a value."""
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # (pydicom raises many kinds for damaged data)
        raise CustodianError("The attributes of this image cannot be read: its stored data is damaged."
                             ) from None


def tag_rows(ds: Dataset, shown: frozenset[Field], depth: int = 0) -> list[TagRow]:
    """Every attribute of ``ds`` in tag order, sequences followed by their items' attributes one
    level deeper; what ``shown`` does not cover is :data:`WITHHELD` (a withheld sequence has no items)."""
    rows: list[TagRow] = []
    for element in ds:
        withheld = not may_show(element, shown)
        rows.append(TagRow(depth, f"({element.tag.group:04X},{element.tag.element:04X})", element.VR,
                           element.keyword or element.name, WITHHELD if withheld else _value(element)))
        if element.VR == "SQ" and not withheld:
            for number, item in enumerate(element.value or (), start=1):
                rows.append(TagRow(depth + 1, "", "", f"Item {number}", f"{len(item)} attributes"))
                rows += tag_rows(item, shown, depth + 2)
    return rows


def may_show(element: DataElement, shown: frozenset[Field]) -> bool:
    """Whether a role shown ``shown`` may see this attribute's value."""
    if element.tag.is_private:
        return shown >= _EVERY
    return shown >= IDENTIFYING.get(element.keyword, frozenset())


def matching(rows: list[TagRow], text: str) -> list[TagRow]:
    """The rows that match ``text``, each with the sequence rows and items it sits in, in order;
    every row for an empty filter."""
    if not text.strip():
        return list(rows)
    kept: list[TagRow] = []
    above: list[TagRow] = []  # the rows this one sits in, outermost first
    taken: set[int] = set()  # ids of the rows in ``above`` already kept
    for row in rows:
        above = [r for r in above if r.depth < row.depth]
        if row.matches(text):
            kept += [r for r in above if id(r) not in taken]
            taken.update(id(r) for r in above)
            kept.append(row)
            taken.add(id(row))
        above.append(row)
    return kept


def _value(element: DataElement) -> str:
    try:
        if element.VR == "SQ":
            count = len(element.value or ())
            return f"{count} item{'s' if count != 1 else ''}"
        if BINARY_VRS & set(element.VR.split(" or ")) or element.tag == 0x7FE00010:
            return f"<{len(element.value or b'')} bytes>"
        value = element.value
        text = "\\".join(str(v) for v in value) if element.VM > 1 else "" if value is None else str(value)
    except Exception:  # a value pydicom cannot decode: its kind, never its bytes
        return "(cannot be read)"
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"
