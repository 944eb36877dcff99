"""Reports built as a PACS would send them, for the tests: Basic Text, Enhanced and Comprehensive
SR and an encapsulated PDF, each of the study of the image it is made from (pydicom, by hand:
highdicom is not among the dependencies)."""

from __future__ import annotations

from datetime import UTC, datetime

from fpdf import FPDF
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

BASIC, ENHANCED, COMPREHENSIVE = ("1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
                                  "1.2.840.10008.5.1.4.1.1.88.33")
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
           "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
           "ReferringPhysicianName")


def code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = value, scheme, meaning
    return ds


def item(relationship: str, value_type: str, concept: str, *children: Dataset, **values: object) -> Dataset:
    ds = Dataset()
    ds.RelationshipType, ds.ValueType = relationship, value_type
    ds.ConceptNameCodeSequence = [code(f"T-{abs(hash(concept)) % 10**6}", concept, "99TEST")]
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    if value_type == "CONTAINER":
        ds.ContinuityOfContent = "SEPARATE"
    if children:
        ds.ContentSequence = list(children)
    return ds


def num(concept: str, value: str, unit: str, meaning: str) -> Dataset:
    measured = Dataset()
    measured.NumericValue = value
    measured.MeasurementUnitsCodeSequence = [code(unit, meaning, "UCUM")]
    return item("CONTAINS", "NUM", concept, MeasuredValueSequence=[measured])


def image_ref(sop_class: str, sop_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_uid
    return item("CONTAINS", "IMAGE", "Key image", ReferencedSOPSequence=[ref])


def document(image: Dataset, sop_class: str, title: str, *content: Dataset) -> Dataset:
    """An SR document of ``image``'s study whose root container is ``title``."""
    ds = _instance(image, sop_class, "SR")
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [code("18748-4", title, "LN")]
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = image.StudyDate, "120000"
    ds.ContentSequence = list(content)
    return ds


def basic_text(image: Dataset) -> Dataset:
    return document(image, BASIC, "Imaging report", item(
        "CONTAINS", "CONTAINER", "Findings",
        item("CONTAINS", "TEXT", "Finding", TextValue="No focal consolidation."),
        item("CONTAINS", "TEXT", "Impression", TextValue="Normal chest CT.")))


def enhanced(image: Dataset) -> Dataset:
    return document(image, ENHANCED, "Measurement report", item(
        "CONTAINS", "CONTAINER", "Lesion 1", num("Long axis", "23.5", "mm", "millimeter"),
        num("Attenuation", "41", "[hnsf'U]", "Hounsfield unit"),
        item("CONTAINS", "CODE", "Finding site", ConceptCodeSequence=[code("39607008", "Lung", "SCT")])))


def comprehensive(image: Dataset) -> Dataset:
    """A report citing ``image``, which its evidence list names with its series."""
    cited, series, study = Dataset(), Dataset(), Dataset()
    cited.ReferencedSOPClassUID, cited.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    series.SeriesInstanceUID, series.ReferencedSOPSequence = image.SeriesInstanceUID, [cited]
    study.StudyInstanceUID, study.ReferencedSeriesSequence = image.StudyInstanceUID, [series]
    ds = _comprehensive(image)
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    return ds


def _comprehensive(image: Dataset) -> Dataset:
    return document(image, COMPREHENSIVE, "Imaging report", item(
        "CONTAINS", "CONTAINER", "Findings",
        item("CONTAINS", "TEXT", "Finding", TextValue="Nodule, right lower lobe."),
        num("Diameter", "8", "mm", "millimeter"),
        image_ref(str(image.SOPClassUID), str(image.SOPInstanceUID))))


def nested(image: Dataset, depth: int) -> Dataset:
    inner = item("CONTAINS", "TEXT", "Finding", TextValue="deep")
    for _ in range(depth):
        inner = item("CONTAINS", "CONTAINER", "Section", inner)
    return document(image, COMPREHENSIVE, "Nested", inner)


def flat(image: Dataset, count: int) -> Dataset:
    one = item("CONTAINS", "TEXT", "Finding", TextValue="x")
    return document(image, BASIC, "Long", *([one] * count))


def pdf_bytes(text: str) -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))  # (the same text, the same bytes)
    pdf.add_page()
    pdf.set_font("helvetica", size=28)
    pdf.cell(text=text)
    return bytes(pdf.output())


def pdf_report(image: Dataset, text: str) -> Dataset:
    ds = _instance(image, PDF, "DOC")
    data = pdf_bytes(text)
    ds.DocumentTitle = "Outside radiology report"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    ds.ConceptNameCodeSequence = Sequence()
    ds.EncapsulatedDocumentLength = len(data)
    ds.EncapsulatedDocument = data + b"\0" * (len(data) % 2)
    return ds


def _instance(image: Dataset, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    for keyword in _COPIED:
        if keyword in image:
            setattr(ds, keyword, image.get(keyword))
    ds.SOPClassUID, ds.Modality = sop_class, modality
    ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), 900
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    return ds
