"""Key Object Selection documents: the key images a reader marked, as the PACS and every other
viewer read them (PS3.3 A.35.4, template TID 2010), and the images a received one selects.

Built with highdicom, imported when a document is made (it costs a quarter of a second to load).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid

from app import __version__

KEY_SERIES_NUMBER = 9901  # beyond the modality's own series numbers
KEY_SERIES_DESCRIPTION = "Key images"
OF_INTEREST = ("113000", "DCM", "Of Interest")  # CID 7010 Key Object Selection Document Title


def key_object(evidence: Sequence[Dataset], frames: Mapping[str, Sequence[int]],
               observer: str) -> tuple[str, bytes]:
    """A Key Object Selection document ("Of Interest") selecting ``evidence`` (the marked images'
    headers, all of one study), observed by the user ``observer``; ``frames``: by SOP Instance UID,
    the marked frames (numbered from 1) of multi-frame images. Its SOP Instance UID and Part 10
    bytes (Explicit VR Little Endian)."""
    from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
    from highdicom.sr import CodedConcept, ObserverContext, PersonObserverIdentifyingAttributes
    from pydicom.sr.codedict import codes

    content = KeyObjectSelection(
        document_title=CodedConcept(*OF_INTEREST), referenced_objects=list(evidence),
        observer_person_context=ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=PersonObserverIdentifyingAttributes(name=f"{observer}^")))
    document = KeyObjectSelectionDocument(
        evidence=list(evidence), content=content, series_instance_uid=generate_uid(),
        series_number=KEY_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="Custodian", institution_name=None)
    document.SeriesDescription = KEY_SERIES_DESCRIPTION
    document.SoftwareVersions = __version__
    for item in _references(document):
        chosen = frames.get(str(item.ReferencedSOPInstanceUID))
        if chosen:
            item.ReferencedFrameNumber = sorted(chosen)
    out = DicomBytesIO()
    document.save_as(out, enforce_file_format=True)
    return str(document.SOPInstanceUID), out.getvalue()


def selected_images(data: bytes) -> list[str]:
    """The SOP Instance UIDs of the images a Key Object Selection document selects, in its order."""
    return list(dict.fromkeys(str(item.ReferencedSOPInstanceUID)
                              for item in _references(dcmread(DicomBytesIO(data)))))


def _references(document: Dataset) -> list[Dataset]:
    """The referenced-image items of the document's content tree (its root container's IMAGE items)."""
    return [ref for item in document.get("ContentSequence", [])
            if item.get("ValueType") == "IMAGE" for ref in item.get("ReferencedSOPSequence", [])]
