"""The DICOMDIR of exported media, built in memory.

pydicom's FileSet makes the directory records and encodes the DICOMDIR with its offsets, but its
public ``add``/``write`` stage every instance as a plaintext file in a temporary folder. Here the
records are made from header-only datasets (from the vault's index, or the de-identified values),
file IDs follow the IHE PDI rules (under ``DICOM/``, eight upper-case characters per component)
and the DICOMDIR is encoded straight into memory; the instances go into the encrypted archive.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.fileset import FileSet, RecordNode
from pydicom.tag import Tag
from pydicom.uid import UID, generate_uid

from app.errors import CustodianError

PDI_FOLDER = "DICOM"  # IHE PDI: DICOM files live in this folder, nothing else does
FILESET_ID = "CUSTODIAN"


@dataclass(frozen=True)
class Listed:
    """What the directory says about one instance (from the vault's index, or the de-identified
    dataset); record-type attributes beyond these (SR, RT, presentation states) come from
    ``extra``."""

    patient_id: str
    patient_name: str
    study_uid: str
    study_date: str
    study_time: str
    study_id: str
    accession: str
    study_description: str
    series_uid: str
    modality: str
    series_number: int | None
    sop_class: str
    sop_uid: str
    transfer_syntax: str
    instance_number: int | None
    path: str = ""  # where the instance is on the media (see :func:`file_ids`)
    extra: Dataset | None = None


def _header(item: Listed, series_numbers: dict[str, int], instance_numbers: dict[str, int]) -> Dataset:
    ds = Dataset()
    if item.extra is not None:
        ds.update(item.extra)
    ds.PatientID = item.patient_id  # never empty: a patient without one has an ID for this media
    ds.PatientName = item.patient_name
    ds.StudyInstanceUID = item.study_uid
    # Type 1 in the STUDY, SERIES and IMAGE records; where the instance lacks them they are
    # invented for the directory only, as DCMTK's dcmmkdir --invent does.
    ds.StudyDate = item.study_date or "19000101"
    ds.StudyTime = item.study_time or "000000"
    ds.StudyID = item.study_id or item.accession[:16] or "1"
    ds.AccessionNumber = item.accession
    ds.StudyDescription = item.study_description
    ds.SeriesInstanceUID = item.series_uid
    ds.Modality = item.modality or "OT"
    ds.SeriesNumber = item.series_number if item.series_number is not None else \
        series_numbers.setdefault(item.series_uid, len(series_numbers) + 1)
    ds.InstanceNumber = _instance_number(item, instance_numbers)
    ds.SOPClassUID = item.sop_class
    ds.SOPInstanceUID = item.sop_uid
    if any(not str(v).isascii() for v in (ds.PatientName, ds.StudyDescription, ds.PatientID)):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(item.transfer_syntax)
    return ds


# Placeholders, by VR, for a Type 1 key of a directory record that the instance itself lacks (an
# RT Dose without Dose Summation Type): invented for the directory only, as dcmmkdir --invent does.
_INVENTED = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "IS": "0", "DS": "0",
             "US": 0, "UL": 0, "SS": 0, "SL": 0, "FL": 0.0, "FD": 0.0}
_MISSING = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\) '[^']*' element is missing")


def _sr_record(record: Dataset, header: Dataset) -> None:
    """An SR DOCUMENT record as PS3.3 F.5.24 has it: of the content only the HAS CONCEPT MOD items
    (pydicom copies the whole tree), and a verified document's Verification DateTime, which the
    instance keeps inside its Verifying Observer Sequence."""
    if "ContentSequence" in record:
        kept = [item for item in record.ContentSequence if item.get("RelationshipType") == "HAS CONCEPT MOD"]
        if kept:
            record.ContentSequence = kept
        else:
            del record.ContentSequence
    if record.get("VerificationFlag") == "VERIFIED" and "VerificationDateTime" not in record:
        observers = header.get("VerifyingObserverSequence") or [Dataset()]
        record.VerificationDateTime = observers[-1].get("VerificationDateTime") or "19000101000000"


def _records(fileset: FileSet, header: Dataset) -> list[Dataset]:
    """The records pydicom's FileSet makes for one instance, with missing Type 1 keys invented."""
    for _ in range(8):
        try:
            records = list(fileset._recordify(header))
            if records[-1].DirectoryRecordType == "SR DOCUMENT":
                _sr_record(records[-1], header)
            return records
        except ValueError as exc:
            missing = _MISSING.search(str(exc))
            if missing is None:
                why = str(exc).split(": ", 1)[-1].split(". See")[0]
                raise CustodianError(f"An instance cannot be listed in the DICOMDIR: {why}.") from None
            tag = int(missing[1] + missing[2], 16)
            vr = dictionary_VR(tag)
            value = generate_uid() if vr == "UI" else _INVENTED.get(vr, "UNKNOWN")
            header[tag] = DataElement(tag, vr, value)
    raise CustodianError("An instance cannot be listed in the DICOMDIR: too many required values are "
                         "missing.")


def _instance_number(item: Listed, invented: dict[str, int]) -> int:
    if item.instance_number is not None:
        return item.instance_number
    return invented.setdefault(item.sop_uid, len(invented) + 1)


def _leaf_like(template: Dataset, item: Listed, number: int) -> Dataset:
    """An IMAGE record for another instance of a series: the series' first one with the values
    that differ, and fresh offset elements (the encoder rewrites those in place)."""
    leaf = Dataset(dict(template.items()))
    for keyword, value in (("OffsetOfTheNextDirectoryRecord", 0),
                           ("OffsetOfReferencedLowerLevelDirectoryEntity", 0),
                           ("ReferencedFileID", item.path.split("/")),
                           ("ReferencedSOPInstanceUIDInFile", item.sop_uid), ("InstanceNumber", number)):
        tag = Tag(keyword)
        leaf[tag] = DataElement(tag, dictionary_VR(tag), value)
    return leaf


def file_ids(keys: list[tuple[str, str, str]]) -> list[str]:
    """IHE PDI file IDs (``DICOM/PT000000/ST000000/SE000000/IM000000``) for instances given as
    (patient, study, series) keys, in the order they go on the media."""
    children: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)

    def number(parent: tuple[str, ...], key: str) -> int:
        siblings = children[parent]
        return siblings.setdefault(key, len(siblings))

    paths = []
    for index, (patient, study, series) in enumerate(keys):
        parts = (number((), patient), number((patient,), study), number((patient, study), series),
                 number((patient, study, series), str(index)))
        paths.append("/".join([PDI_FOLDER, *(f"{prefix}{n:06d}" for prefix, n in
                                             zip(("PT", "ST", "SE", "IM"), parts, strict=True))]))
    return paths


def build(items: list[Listed]) -> bytes:
    """The DICOMDIR listing ``items`` at their paths.

    FileSet.add looks every new instance up among all the others (quadratic: seconds for one CT),
    so the records FileSet makes are linked into its tree here, one branch per patient, study and
    series, and FileSet encodes the tree with its offsets. The other images of a series reuse the
    first one's record: making each record anew is most of the time of a large series.
    """
    fileset = FileSet()
    fileset._stage["t"].cleanup()  # its staging folder in the temp dir: nothing is staged here
    fileset.ID = FILESET_ID
    series_numbers: dict[str, int] = {}
    instance_numbers: dict[str, int] = {}
    branches: dict[tuple[str, ...], RecordNode] = {}
    images: dict[tuple[str, str, str], Dataset] = {}  # (series, SOP class, transfer syntax) -> a record
    for item in items:
        same = images.get((item.series_uid, item.sop_class, item.transfer_syntax))
        series = branches.get((item.patient_id, item.study_uid, item.series_uid))
        if same is not None and series is not None:
            leaf_record = _leaf_like(same, item, _instance_number(item, instance_numbers))
            parent = series
        else:
            *upper, leaf_record = _records(fileset, _header(item, series_numbers, instance_numbers))
            parent = fileset._tree
            for depth, record in enumerate(upper):  # PATIENT, STUDY, SERIES (none for one-level records)
                key = (item.patient_id, item.study_uid, item.series_uid)[: depth + 1]
                if key not in branches:
                    branches[key] = RecordNode(record)
                    branches[key].parent = parent
                parent = branches[key]
            leaf_record.ReferencedFileID = item.path.split("/")
            if leaf_record.DirectoryRecordType == "IMAGE" and len(upper) == 3:
                images[(item.series_uid, item.sop_class, item.transfer_syntax)] = leaf_record
        RecordNode(leaf_record).parent = parent
    buffer = io.BytesIO()
    fileset._write_dicomdir(DicomFileLike(buffer))
    return buffer.getvalue()
