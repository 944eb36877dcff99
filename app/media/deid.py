"""De-identification per DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile,
with the Retain Longitudinal Temporal Information (Modified Dates) and Clean Descriptors options.

The attribute actions are the standard's Table E.1-1 as published data (dicom-anonymizer's 2026c
table); applying them is done here, per export: UIDs are remapped with a key that exists only for
this export (consistent inside it, unlinkable across exports), each patient gets a pseudonym and,
with retained dates, one random shift so intervals between studies stay true.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pydicom
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.media.dicomdir import Listed

# Table E.1-1 actions, reduced to what this profile does with each (the standard lets an
# implementation choose among X/Z/D where the IOD allows; the conformant, least-revealing choice):
#   X remove · Z empty · D dummy value · U new UID
_ACTIONS: dict[int, str] = {}
for _tags, _action in ((table.X_TAGS, "X"), (table.Z_TAGS, "Z"), (table.D_TAGS, "D"), (table.U_TAGS, "U"),
                       (table.Z_D_TAGS, "Z"), (table.X_Z_TAGS, "Z"), (table.X_D_TAGS, "D"),
                       (table.X_Z_D_TAGS, "Z"), (table.X_Z_U_STAR_TAGS, "U*")):
    for _tag in _tags:
        if len(_tag) == 2:
            _ACTIONS[(_tag[0] << 16) | _tag[1]] = _action
_MASKED = [((g << 16) | e, (gm << 16) | em) for g, e, gm, em in
           (t for t in table.X_TAGS if len(t) == 4)]  # curves (50xx), overlay data and comments (60xx)

DESCRIPTORS = {0x00081030, 0x0008103E, 0x00081090, 0x00180015, 0x00400254, 0x00321060, 0x00081080}
# Modalities and classes whose pixels often carry burnt-in text (ultrasound, screen captures,
# scanned documents, endoscopy): flagged for review when the file does not say "NO".
BURN_PRONE_MODALITIES = {"US", "SC", "OT", "ES", "XC", "DOC", "SM", "GM"}
CODES = {"basic": ("113100", "Basic Application Confidentiality Profile"),
         "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
         "descriptors": ("113105", "Clean Descriptors Option")}


@dataclass(frozen=True)
class DeidOptions:
    retain_dates: bool = False  # shift dates per patient instead of removing them
    clean_descriptors: bool = False  # keep study/series descriptions that name nobody


@dataclass
class Deidentifier:
    """One export's de-identification."""

    options: DeidOptions = field(default_factory=DeidOptions)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _patients: dict[str, int] = field(default_factory=dict)
    _shifts: dict[str, int] = field(default_factory=dict)
    _names: dict[str, set[str]] = field(default_factory=dict)  # words a clean descriptor must not hold
    flagged: set[str] = field(default_factory=set)  # SOP Instance UIDs (new) to review for burnt-in text

    # -------------------------------------------------------------- the values both paths share
    def uid(self, old: str) -> str:
        digest = hmac.digest(self._key, old.encode(), hashlib.sha256)[:16]
        return f"2.25.{int.from_bytes(digest, 'big')}"

    def patient_id(self, original: str) -> str:
        number = self._patients.setdefault(original, len(self._patients) + 1)
        return f"ANON{number:05d}"

    def patient_name(self, original: str) -> str:
        return f"ANONYMOUS^{self.patient_id(original)}"

    def date(self, value: str, patient: str) -> str:
        if not self.options.retain_dates or not value:
            return ""
        shift = self._shifts.setdefault(patient, -secrets.randbelow(3650) - 365)
        try:
            if len(value) >= 8 and value[:8].isdigit():
                moved = datetime.strptime(value[:8], "%Y%m%d").date() + timedelta(days=shift)
                return moved.strftime("%Y%m%d") + value[8:]
        except ValueError:
            pass
        return ""

    def remember_names(self, patient: str, *values: str) -> None:
        """Words of the patient's name and identifiers, which a kept descriptor must not contain."""
        words = self._names.setdefault(patient, set())
        for value in values:
            text = str(value).replace("^", " ").replace("-", " ")
            words.update(w.upper() for w in text.split() if len(w) > 1)

    def descriptor(self, text: str, patient: str) -> str:
        if not self.options.clean_descriptors:
            return ""
        words = set(text.upper().replace("^", " ").split())
        return "" if words & self._names.get(patient, set()) else text

    def listed(self, item: Listed, patient: str) -> Listed:
        """A directory entry as the de-identified file will say it."""
        return replace(item, patient_id=self.patient_id(patient), patient_name=self.patient_name(patient),
                       study_uid=self.uid(item.study_uid), study_date=self.date(item.study_date, patient),
                       study_time=item.study_time if self.options.retain_dates else "", study_id="",
                       accession="", study_description=self.descriptor(item.study_description, patient),
                       series_uid=self.uid(item.series_uid), sop_uid=self.uid(item.sop_uid))

    # -------------------------------------------------------------- datasets
    def dataset(self, data: bytes, patient: str) -> bytes:
        """The de-identified Part 10 bytes of one instance."""
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
        self._clean(ds, patient)
        ds.remove_private_tags()
        ds.PatientID = self.patient_id(patient)
        ds.PatientName = self.patient_name(patient)
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if self.options.retain_dates else "REMOVED"
        chosen = ["basic"] + (["dates"] if self.options.retain_dates else []) + \
            (["descriptors"] if self.options.clean_descriptors else [])
        ds.DeidentificationMethod = "PS3.15 E.1 " + "; ".join(CODES[c][1] for c in chosen)[:60]
        ds.DeidentificationMethodCodeSequence = Sequence([_code(*CODES[c]) for c in chosen])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if ds.get("BurnedInAnnotation", "") == "YES" or (
                ds.get("Modality", "") in BURN_PRONE_MODALITIES and ds.get("BurnedInAnnotation", "") != "NO"):
            self.flagged.add(str(ds.SOPInstanceUID))
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    def _clean(self, ds: Dataset, patient: str) -> None:
        for element in list(ds):
            tag = int(element.tag)
            action = _ACTIONS.get(tag) or next(("X" for value, mask in _MASKED if tag & mask == value), None)
            if element.VR == "SQ" and action is None:
                for item in element.value:
                    self._clean(item, patient)
                continue
            if tag in DESCRIPTORS:
                element.value = self.descriptor(str(element.value or ""), patient)
                if not element.value:
                    del ds[tag]
                continue
            if element.VR in ("DA", "DT") and action is not None and self.options.retain_dates:
                element.value = self.date(str(element.value or ""), patient)
                continue
            if element.VR == "TM" and action is not None and self.options.retain_dates:
                continue
            if action == "X":
                del ds[tag]
            elif action == "U" or (action == "U*" and element.VR == "UI"):
                element.value = [self.uid(str(v)) for v in element.value] if element.VM > 1 else \
                    self.uid(str(element.value)) if element.value else element.value
            elif action == "D":
                element.value = _dummy(element)
            elif action is not None:
                element.value = Sequence() if element.VR == "SQ" else None


def _dummy(element: DataElement) -> object:
    if element.VR == "SQ":
        return Sequence()
    return {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "PN": "ANONYMOUS",
            "UI": None, "IS": "0", "DS": "0", "AS": "000Y", "CS": "ANONYMIZED"}.get(
        element.VR, 0 if element.VR in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV") else
        b"" if element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") else "ANONYMIZED")


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item

