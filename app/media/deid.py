"""De-identification per DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile,
with the Retain Longitudinal Temporal Information (Modified Dates) and Clean Descriptors options.

The attribute actions are the standard's Table E.1-1 as published data (dicom-anonymizer's 2026c
table); applying them is done here, per export: UIDs are remapped with a key that exists only for
this export (consistent inside it, unlinkable across exports), each patient gets a pseudonym and,
with retained dates, one random shift so intervals between studies stay true.

A de-identified instance must still be a valid one (a viewer or archive may refuse it otherwise),
so each action is resolved against what the instance's IOD needs: the table's combined codes
(X/Z, X/D, X/Z/D, Z/D) become removal where the attribute is optional, an empty value where it is
Type 2 and a dummy of the right VR where it is Type 1; D always leaves a non-empty dummy.
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
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from app.errors import CustodianError
from app.media.dicomdir import Listed
from app.media.disclosures import DeidOptions


class DeidRefused(CustodianError):
    """An instance that cannot be de-identified: not DICOM, truncated, or without the UIDs that
    make it an instance. The message is a plain reason and never quotes a value of the instance."""


# Table E.1-1's action code for each attribute; the combined codes are resolved per attribute by
# `_resolve`. The table's masked rows (curves 50xx, overlay data and comments 60xx) are not used:
# those groups are removed whole, since an overlay group without its data is an invalid overlay.
_ACTIONS: dict[int, str] = {}
for _tags, _action in ((table.X_TAGS, "X"), (table.Z_TAGS, "Z"), (table.D_TAGS, "D"), (table.U_TAGS, "U"),
                       (table.Z_D_TAGS, "Z/D"), (table.X_Z_TAGS, "X/Z"), (table.X_D_TAGS, "X/D"),
                       (table.X_Z_D_TAGS, "X/Z/D"), (table.X_Z_U_STAR_TAGS, "X/Z/U*")):
    for _tag in _tags:
        if len(_tag) == 2:
            _ACTIONS[(_tag[0] << 16) | _tag[1]] = _action
_ACTIONS[0x00089123] = "U"  # Creator-Version UID: U in Table E.1-1, missing from dicom-anonymizer's table

# pydicom has no IOD tables: these are the attributes Table E.1-1 lists with a removing or emptying
# action that an IOD in common use makes Type 1 (1: a dummy is needed) or Type 2 (2: empty will
# do). Anything not here is taken as optional; dciodvfy on pydicom's test files checks the list.
_REQUIRED: dict[int, int] = {
    0x00080021: 1,  # Series Date: PET Series
    0x00080031: 1,  # Series Time: PET Series
    0x00080023: 1,  # Content Date: SR Document General, Multi-frame Functional Groups, Waveform
    0x00080033: 1,  # Content Time: the same modules
    0x0008002A: 1,  # Acquisition DateTime: Waveform Identification, enhanced images (1C in US Image)
    0x00181000: 1,  # Device Serial Number: Enhanced General Equipment
    0x0040A032: 1,  # Observation DateTime: SR content items (1C)
    0x0040B020: 1,  # Waveform Annotation Sequence: Waveform Annotation
    0x00081070: 2,  # Operators' Name: RT Series
    0x00081111: 2,  # Referenced Performed Procedure Step Sequence: SR and Key Object Document Series
    0x00400555: 2,  # Acquisition Context Sequence: Acquisition Context
    0x00102203: 2,  # Patient's Sex Neutered: Patient (2C, for animals)
    0x00321060: 2,  # Requested Procedure Description: SR's Referenced Request Sequence
    0x00700084: 2,  # Content Creator's Name: Presentation State Identification
    0x00180010: 2,  # Contrast/Bolus Agent: Contrast/Bolus
    0x300A0006: 2,  # RT Plan Date: RT General Plan
    0x300A0007: 2,  # RT Plan Time: RT General Plan
    0x300A00B2: 2,  # Treatment Machine Name: RT Beams, RT Ion Beams
    0x30080054: 2,  # First Treatment Date: RT Treatment Summary Record
    0x30080056: 2,  # Most Recent Treatment Date: RT Treatment Summary Record
    0x30080250: 2,  # Treatment Date: RT General Treatment Record
    0x30080251: 2,  # Treatment Time: RT General Treatment Record
    0x300E0008: 2,  # Reviewer Name: Approval (2C)
}
# Sequences whose items are codes for a person or an institution: their dummy is one dummy code.
_IDENTITY_CODES = {0x00401101, 0x00080082}  # Person Identification Code Sequence, Institution Code Sequence
# Inside a sequence whose action is D (an SR's Content Sequence, a Verifying Observer...) the
# values the table does not list are the sequence's content too: free text, names and dates there
# get dummies; codes, numbers and the tree's structure stay, so the document remains valid.
_CONTENT_VRS = {"PN", "ST", "LT", "UT", "UC", "DA", "DT"}

DESCRIPTORS = {0x00081030, 0x0008103E, 0x00400254, 0x00321060, 0x00081080}
# Modalities and classes whose pixels often carry burnt-in text (ultrasound, screen captures,
# scanned documents, endoscopy): flagged for review when the file does not say "NO".
BURN_PRONE_MODALITIES = {"US", "SC", "OT", "ES", "XC", "DOC", "SM", "GM"}
CODES = {"basic": ("113100", "Basic Application Confidentiality Profile"),
         "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
         "descriptors": ("113105", "Clean Descriptors Option")}
_METHOD = {"basic": "DICOM PS3.15 E.1 Basic", "dates": "Modified Dates", "descriptors": "Clean Descriptors"}
_TEXT = "ANONYMIZED"  # fits every string VR's length, CS and SH (16) included
_DUMMY_DATE, _DUMMY_TIME = "19000101", "000000"


def _resolve(tag: int, action: str) -> str:
    """The one action (X remove, Z empty, D dummy, U new UID) a Table E.1-1 code comes to for this
    attribute: the least revealing one its type allows."""
    need = _REQUIRED.get(tag, 3)
    if action in ("U", "X/Z/U*"):
        return "U"  # a reference kept, with the UIDs it holds remapped like the instances they name
    if action in ("D", "X/D"):
        return "D" if action == "D" or need <= 2 else "X"
    if action in ("Z", "Z/D"):
        return "Z" if need == 2 or (action == "Z" and need == 3) else "D"
    # X, X/Z, X/Z/D: removed when optional
    return "X" if need == 3 else "D" if need == 1 or action == "X" else "Z"


class _Source(io.BytesIO):
    """An instance's bytes that notice an element header cut short by their end, which pydicom
    takes for the end of the dataset."""

    short = False

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        chunk = super().read(size)
        if size is not None and 0 < len(chunk) < size <= 8 and start >= 132:  # past the preamble probe
            self.short = True
        return chunk


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
        """A date or datetime as the media may say it: shifted with retained dates, else nothing."""
        return (self._moved(value, patient) or "") if self.options.retain_dates else ""

    def _moved(self, value: str, patient: str) -> str | None:
        shift = self._shifts.setdefault(patient, -secrets.randbelow(3650) - 365)
        try:
            if len(value) >= 8 and value[:8].isdigit():
                moved = datetime.strptime(value[:8], "%Y%m%d").date() + timedelta(days=shift)
                return moved.strftime("%Y%m%d") + value[8:]
        except ValueError:
            pass
        return None

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
        """The de-identified Part 10 bytes of one instance, whatever form the vault keeps it in
        (Part 10 or a bare dataset, any byte order): in the transfer syntax it came in, since
        compressed pixels are not touched here. Raises DeidRefused, and nothing else, for data
        that cannot be de-identified."""
        ds = _read(data)
        try:
            return self._deidentified(ds, patient)
        except DeidRefused:
            raise
        except Exception as exc:  # a value pydicom cannot decode or encode: its type, never its content
            raise DeidRefused(f"the instance could not be de-identified ({type(exc).__name__})") from None

    def _deidentified(self, ds: Dataset, patient: str) -> bytes:
        meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        # A dataset without its SOP Instance UID is no instance (a fragment the vault does not take);
        # the SOP Class UID may be found in the meta header only, as the vault's import allows.
        sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "").strip()
        sop_uid = str(ds.get("SOPInstanceUID") or "").strip()
        if not sop_uid:
            raise DeidRefused("the data has no SOP Instance UID: it is no instance")
        if not sop_class:
            raise DeidRefused("the instance has no SOP Class UID")
        syntax = _syntax(ds, meta.get("TransferSyntaxUID"))
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        for tag in [e.tag for e in ds if e.tag.group in (0x0000, 0x0002)]:
            del ds[tag]  # command or meta elements astray in the dataset: never part of a stored instance
        ds.remove_private_tags()
        self._clean(ds, patient, content=False)
        ds.PatientID = self.patient_id(patient)
        ds.PatientName = self.patient_name(patient)
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if self.options.retain_dates else "REMOVED"
        chosen = ["basic"] + (["dates"] if self.options.retain_dates else []) + \
            (["descriptors"] if self.options.clean_descriptors else [])
        ds.DeidentificationMethod = "; ".join(_METHOD[c] for c in chosen)
        ds.DeidentificationMethodCodeSequence = Sequence([_code(*CODES[c]) for c in chosen])
        ds.file_meta = FileMetaDataset()  # a new one: the received one may name the sending site
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = syntax
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.preamble = b"\0" * 128  # a received preamble (a TIFF header, say) is not ours to pass on
        if may_carry_burnt_in(ds):
            self.flagged.add(str(ds.SOPInstanceUID))
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    def _clean(self, ds: Dataset, patient: str, content: bool) -> None:
        """The profile applied to one dataset or sequence item; ``content``: inside a sequence
        whose action is D, where unlisted text, names and dates are content too."""
        for element in list(ds):
            tag = int(element.tag)
            if tag >> 24 in (0x50, 0x60):  # curve and overlay groups, whole
                del ds[tag]
                continue
            if tag in DESCRIPTORS and self.descriptor(_text(element.value), patient):
                continue  # a description that names nobody, kept by the Clean Descriptors option
            action = _ACTIONS.get(tag)
            if action is not None:
                self._apply(ds, element, _resolve(tag, action), patient)
            elif element.VR == "SQ":
                for item in element.value:
                    self._clean(item, patient, content)
            elif content and element.VR in _CONTENT_VRS and not element.is_empty:
                self._apply(ds, element, "D", patient)

    def _apply(self, ds: Dataset, element: DataElement, action: str, patient: str) -> None:
        if element.VR in ("DA", "DT") and self.options.retain_dates and action != "U":
            moved = [self._moved(v, patient) for v in _values(element)]
            if moved and all(m is not None for m in moved):
                element.value = moved if len(moved) > 1 else moved[0]
                return
        if element.VR == "TM" and self.options.retain_dates and not element.is_empty:
            return  # times are retained with the Modified Dates option
        if action == "X":
            del ds[element.tag]
        elif action == "Z":
            element.value = Sequence() if element.VR == "SQ" else None
        elif element.VR == "SQ":
            if action == "D" and int(element.tag) in _IDENTITY_CODES:
                element.value = Sequence([_code(_TEXT, _TEXT.title(), "99ANON")])
            else:  # U: the references kept, their UIDs remapped; D: the items' content replaced
                for item in element.value:
                    self._clean(item, patient, content=action == "D")
        elif action == "U":
            uids = [self.uid(v.strip("\0 ")) for v in _values(element) if v.strip("\0 ")]
            element.VR = "UI"  # (a UID the sender wrote as UN)
            element.value = uids if len(uids) > 1 else uids[0] if uids else None
        else:
            element.value = self._dummy(element)

    def _dummy(self, element: DataElement) -> object:
        """A non-empty value of the element's VR that says nothing (a UID is remapped, so the
        instances that share it still do)."""
        vr = element.VR
        if vr == "UI":
            return self.uid(_text(element.value) or _TEXT)
        if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"):
            return 0
        if vr in ("OB", "UN"):
            return _TEXT.encode()
        if vr in ("OW", "OF", "OL", "OD", "OV"):
            return bytes(8)
        return {"DA": _DUMMY_DATE, "DT": _DUMMY_DATE + _DUMMY_TIME, "TM": _DUMMY_TIME, "PN": "ANONYMOUS",
                "IS": "0", "DS": "0", "AS": "000D"}.get(vr, _TEXT)


def may_carry_burnt_in(ds: Dataset) -> bool:
    """Whether the pixels may show patient details: the file says so, or its modality is prone to
    it and the file does not say NO."""
    said = ds.get("BurnedInAnnotation", "")
    return said == "YES" or (ds.get("Modality", "") in BURN_PRONE_MODALITIES and said != "NO")


def _read(data: bytes) -> Dataset:
    """The dataset, every value decoded now, so bad data is refused before anything is changed."""
    source = _Source(data)
    try:
        ds = pydicom.dcmread(source, force=True)
        truncated = _cut_short(ds)
    except Exception:
        raise DeidRefused("the data is not a readable DICOM instance") from None
    if truncated or source.short:
        raise DeidRefused("the instance is truncated")
    if not len(ds):  # also what pydicom leaves of a dataset cut short inside an undefined length
        raise DeidRefused("the data holds no DICOM dataset (empty or cut short)")
    return ds


def _cut_short(ds: Dataset) -> bool:
    """Whether a value ends before the length its header states (pydicom keeps the part that is
    there without a word); every value is decoded on the way."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        stated = raw.length if isinstance(raw, RawDataElement) else 0xFFFFFFFF
        if stated != 0xFFFFFFFF and len(raw.value or b"") < stated:
            return True  # (an undefined length cut short loses pydicom the whole dataset: see _read)
        element = ds[tag]
        if element.VR == "SQ" and any(_cut_short(item) for item in element.value):
            return True
    return False


def _syntax(ds: Dataset, stated: object) -> UID:
    """The transfer syntax to write: the meta header's (values are re-encoded in its VR form, so
    compressed pixels keep their syntax even where a sender wrote the dataset in implicit VR),
    unless there is none or its byte order is not the data's (then the plain syntax found)."""
    implicit, little = ds.original_encoding
    try:
        syntax = UID(str(stated or "").strip("\0 "))
        if syntax.is_transfer_syntax and syntax.is_little_endian == little:
            return syntax
    except ValueError:
        pass
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _values(element: DataElement) -> list[str]:
    value = element.value
    if value is None or value == "":
        return []
    return [str(v) for v in value] if element.VM > 1 else [_text(value)]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


def _code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
