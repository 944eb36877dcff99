"""Turning the bytes of one candidate file into an instance record, or a reason to refuse it.

The parse is strict where a wrong answer would corrupt the cache (UIDs, pixel data extent) and
lenient where DICOM in the wild is sloppy (missing Patient ID, odd text values). Reasons are
plain sentences without PHI, safe for reports and logs.
"""

from __future__ import annotations

import builtins
import io
import json
import re
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from app.store.limits import DEFAULT_LIMITS, IntakeLimits, OverLimit

# Values that break their VR are read as they are instead of warned about: pydicom's warnings
# quote the offending value, which may be PHI, into logs.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)  # Float and Double Float Pixel Data
# Of a deflated data set only this much of the inflated bytes is kept (the header the index reads;
# the pixels are counted as they inflate, not kept): the file itself is stored as it came.
HEADER_BYTES = 32 * 1024 * 1024
INFLATE_STEP = 1024 * 1024
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


class Rejected(Exception):
    """The file cannot be cached; ``str(exc)`` is the reason shown to the user."""


class DicomDirectory(Exception):
    """The file is a DICOMDIR: its referenced files are imported instead."""


@dataclass(frozen=True)
class ParsedInstance:
    data: bytes  # the Part 10 bytes that are stored (the file itself when it was Part 10)
    sop_uid: str
    sop_class: str
    transfer_syntax: str
    study_uid: str
    series_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession: str
    study_description: str
    referring: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    frame_of_reference: str
    instance_number: int | None
    rows: int | None = None
    columns: int | None = None
    frames: int | None = None
    samples: int | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int | None = None
    photometric: str | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    window_center: float | None = None
    window_width: float | None = None
    pixel_spacing: str | None = None
    position: str | None = None
    orientation: str | None = None
    pixel_offset: int | None = None  # where native little-endian pixel bytes start, for fast loads
    frame_positions: str | None = None  # JSON, one Image Position (Patient) per frame (enhanced)
    needs_header: bool | None = None  # display needs more than rescale and one window (LUTs...)


# In a name, each component and each group may switch the ISO 2022 character set anew (byte values:
# decode_bytes compares them with the bytes of the value).
_TEXT_DELIMITERS = {"PN": {ord("^"), ord("=")}}
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
# Display attributes beyond a linear rescale and one window: loading such an image reads its header.
_PRESENTATION_KEYWORDS = ("ModalityLUTSequence", "VOILUTSequence", "VOILUTFunction",
                          "PresentationLUTShape", "RedPaletteColorLookupTableDescriptor",
                          "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
_NUMERIC_BINARY = {"US": 2, "SS": 2, "UL": 4, "SL": 4}


class _Header:
    """Reads the attributes an index row needs straight from pydicom's raw elements.

    pydicom's general element conversion costs about as much as reading the whole file; for
    the few dozen simple values indexed here, decoding the raw bytes (with pydicom's own
    character-set decoding for text) keeps import as fast as a plain ``dcmread``.
    """

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        # The raw element mapping, nothing converted. Dataset.elements() yields the same but
        # costs as much as the whole header parse; pydicom<4 keeps it in ``_dict``.
        raw = getattr(ds, "_dict", None)
        self._elements = raw if isinstance(raw, dict) else {e.tag: e for e in ds.elements()}
        self._encodings: list[str] | None = None

    def _raw(self, keyword: str) -> tuple[str, bytes, bool] | None:
        tag = keyword_dict.get(keyword)
        if tag is None:
            return None
        elem = self._elements.get(tag)
        if elem is None:
            return None
        if not isinstance(elem, RawDataElement):  # already converted (e.g. by a rewrite)
            value = elem.value
            return (elem.VR, value if isinstance(value, bytes) else str(value).encode(), True)
        vr = elem.VR or dictionary_VR(tag)
        return (vr, elem.value or b"", elem.is_little_endian)

    def _charset(self) -> list[str]:
        if self._encodings is None:
            try:
                self._encodings = convert_encodings(self._ds.get("SpecificCharacterSet") or "ISO_IR 6")
            except Exception:
                self._encodings = ["iso8859"]
        return self._encodings

    def text(self, keyword: str) -> str:
        raw = self._raw(keyword)
        if raw is None:
            return ""
        vr, value, _ = raw
        try:
            if vr in ("PN", "LO", "SH", "LT", "ST", "UT", "UC"):
                text = decode_bytes(value, self._charset(), _TEXT_DELIMITERS.get(vr, set()))
            else:
                text = value.decode("ascii", "replace")
        except Exception:
            text = value.decode("latin-1")
        return text.split("\\")[0].strip(" \0")

    def int(self, keyword: str) -> int | None:
        raw = self._raw(keyword)
        if raw is None:
            return None
        vr, value, little = raw
        size = _NUMERIC_BINARY.get(vr)
        try:
            if size:
                if len(value) < size:
                    return None
                return int.from_bytes(value[:size], "little" if little else "big", signed=vr[0] == "S")
            return int(float(value.decode("ascii").split("\\")[0]))
        except (ValueError, UnicodeDecodeError):
            return None

    def numbers(self, keyword: str) -> list[float] | None:
        raw = self._raw(keyword)
        if raw is None or raw[0] not in ("DS", "IS"):
            return None
        try:
            return [float(v) for v in raw[1].decode("ascii").split("\\")]
        except (ValueError, UnicodeDecodeError):
            return None

    def float(self, keyword: str) -> float | None:
        values = self.numbers(keyword)
        return values[0] if values else None

    def floats(self, keyword: str, count: builtins.int) -> str | None:  # (int here is the method)
        values = self.numbers(keyword)
        return json.dumps(values) if values and len(values) == count else None

    def has(self, keyword: str) -> bool:
        return keyword_dict.get(keyword) in self._elements

    def has_overlay(self) -> bool:
        return any(tag >> 16 in _OVERLAY_GROUPS and tag & 0xFFFF == 0x3000 for tag in self._elements)

    def uid(self, keyword: str, label: str) -> str:
        value = self.text(keyword)
        if not value:
            raise Rejected(f"missing {label}")
        if len(value) > 64 or not _UID.match(value):
            raise Rejected(f"invalid {label}")
        return value


def _looks_like_dataset(data: bytes) -> bool:
    """A raw data set without preamble starts with a group 0002 or 0008 tag."""
    return data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _read(data: bytes, limits: IntakeLimits) -> tuple[Dataset, bytes]:
    """The data set, and the bytes its elements' offsets refer to (inflated, if it was deflated)."""
    part10 = data[128:132] == b"DICM"
    if not part10 and not _looks_like_dataset(data):
        raise Rejected("not a DICOM file")
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deflated = _deflated_meta(data) if part10 else None
            if deflated is not None:
                return _read_deflated(data, *deflated, limits)
            ds = pydicom.dcmread(fp, force=not part10, defer_size=4096)
    except (Rejected, OverLimit):
        raise
    except (InvalidDicomError, EOFError) as exc:
        raise Rejected("not a DICOM file" if not part10 else "truncated or malformed DICOM data") from exc
    except Exception as exc:
        raise Rejected("truncated or malformed DICOM data") from exc
    if fp.tell() > len(data):
        raise Rejected("file is truncated")
    return ds, data


def _deflated_meta(data: bytes) -> tuple[FileMetaDataset, int] | None:
    """The file meta of a Part 10 file in Deflated Explicit VR Little Endian, and where its
    deflated data set starts; None for any other file (known by a glance at its first bytes)."""
    if DeflatedExplicitVRLittleEndian.encode() not in data[132:4096]:
        return None
    fp = io.BytesIO(data)
    fp.seek(132)
    meta = read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
    if str(meta.get("TransferSyntaxUID", "")) != DeflatedExplicitVRLittleEndian:
        return None
    return FileMetaDataset(meta), fp.tell()


def _inflate(data: bytes, start: int, limits: IntakeLimits, keep: int) -> tuple[bytes, int, bool]:
    """Inflate ``data[start:]`` a step at a time, refusing (OverLimit) as soon as it passes what
    its size may inflate to: the first ``keep`` bytes, how many there were, whether it ended well."""
    cap = limits.inflation_cap(len(data) - start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    kept, total, pending = bytearray(), 0, memoryview(data)[start:]
    try:
        while True:
            chunk = inflater.decompress(pending, INFLATE_STEP)
            pending = memoryview(inflater.unconsumed_tail)
            total += len(chunk)
            if total > cap:
                raise limits.too_inflated(total)
            kept += chunk[:max(keep - len(kept), 0)]
            if inflater.eof or not (chunk or pending):
                break
    except zlib.error:
        return bytes(kept), total, False
    return bytes(kept), total, inflater.eof


def check_inflation(data: bytes, limits: IntakeLimits) -> None:
    """Refuse (OverLimit) a deflated Part 10 file that would inflate beyond the limits, before
    pydicom inflates it whole in memory; other damage is left for :func:`parse` to name."""
    try:
        deflated = _deflated_meta(data) if data[128:132] == b"DICM" else None
    except Exception:  # a damaged file meta: not this check's business
        return
    if deflated is not None:
        _inflate(data, deflated[1], limits, keep=0)


def _read_deflated(data: bytes, meta: FileMetaDataset, start: int,
                   limits: IntakeLimits) -> tuple[Dataset, bytes]:
    body, total, complete = _inflate(data, start, limits, keep=HEADER_BYTES)
    if not complete:
        raise Rejected("truncated or malformed DICOM data")
    ds = read_dataset(io.BytesIO(body), False, True, defer_size=4096)
    if total > len(body) and PIXEL_DATA not in ds:
        raise Rejected(f"the header of this deflated file is larger than the {HEADER_BYTES >> 20} MB "
                       "read to index it")
    ds.file_meta = meta
    return ds, body


def _as_part10(ds: Dataset, sop_class: str, sop_uid: str) -> bytes:
    """Wrap a bare data set (no preamble, no file meta) as a Part 10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    implicit, little = ds.original_encoding
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def parse(data: bytes, limits: IntakeLimits = DEFAULT_LIMITS) -> ParsedInstance:
    """The instance record of one file; Rejected with the reason, or OverLimit for a deflated data
    set that would inflate beyond the site's limits (refused as it inflates, nothing kept)."""
    if not data:
        raise Rejected("empty file")
    ds, body = _read(data, limits)
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    h, m = _Header(ds), _Header(meta)
    if m.text("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        raise DicomDirectory()
    sop_uid = h.uid("SOPInstanceUID", "SOP Instance UID")
    sop_class = h.text("SOPClassUID") or m.text("MediaStorageSOPClassUID")
    if not sop_class:
        raise Rejected("missing SOP Class UID")
    study_uid = h.uid("StudyInstanceUID", "Study Instance UID")
    series_uid = h.uid("SeriesInstanceUID", "Series Instance UID")
    if "TransferSyntaxUID" not in meta:
        # Not Part 10: rebuild the file with a proper header, then parse what will be stored.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full = pydicom.dcmread(io.BytesIO(data), force=True)
            return parse(_as_part10(full, sop_class, sop_uid), limits)
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected("truncated or malformed DICOM data") from exc
    syntax = str(meta.TransferSyntaxUID)
    record: dict[str, Any] = dict(  # the fields of a ParsedInstance
        data=data, sop_uid=sop_uid, sop_class=sop_class, transfer_syntax=syntax,
        study_uid=study_uid, series_uid=series_uid,
        patient_id=h.text("PatientID"), issuer=h.text("IssuerOfPatientID"),
        patient_name=h.text("PatientName"), birth_date=h.text("PatientBirthDate"),
        sex=h.text("PatientSex"), study_date=h.text("StudyDate"),
        study_time=h.text("StudyTime"), accession=h.text("AccessionNumber"),
        study_description=h.text("StudyDescription"),
        referring=h.text("ReferringPhysicianName"), modality=h.text("Modality"),
        series_number=h.int("SeriesNumber"), series_description=h.text("SeriesDescription"),
        body_part=h.text("BodyPartExamined"),
        frame_of_reference=h.text("FrameOfReferenceUID"),
        instance_number=h.int("InstanceNumber"),
    )
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    floats = None if raw is not None else next(
        (ds.get_item(tag, keep_deferred=True) for tag in FLOAT_PIXEL_DATA if tag in ds), None)
    if raw is not None or floats is not None:
        record.update(_pixel_description(h, raw if raw is not None else floats, body, syntax))
        if floats is not None:  # parametric maps: float values, read through pydicom
            record.update(pixel_offset=None, needs_header=True)
        if (record["frames"] or 1) > 1 and h.has("PerFrameFunctionalGroupsSequence"):
            record.update(_frame_geometry(ds, record))
    return ParsedInstance(**record)


def _frame_geometry(ds: Dataset, record: dict[str, object]) -> dict[str, object]:
    """Where each frame of an enhanced multi-frame image lies (PS3.3 C.7.6.16.2.3 Plane Position,
    C.7.6.16.2.4 Plane Orientation, C.7.6.16.2.1 Pixel Measures), from the per-frame or shared
    functional groups; nothing when a frame has no position (the frames then stay in file order)."""
    try:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        per_frame = ds.PerFrameFunctionalGroupsSequence

        def group_value(item: Dataset, sequence: str, keyword: str, count: int) -> list[float] | None:
            for source in (item, shared):
                group = source.get(sequence)
                value = group[0].get(keyword) if group else None
                if value is not None and len(value) == count:
                    return [float(v) for v in value]
            return None

        positions = [group_value(item, "PlanePositionSequence", "ImagePositionPatient", 3)
                     for item in per_frame]
        orientation = group_value(per_frame[0], "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        spacing = group_value(per_frame[0], "PixelMeasuresSequence", "PixelSpacing", 2)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise Rejected("the functional groups of this multi-frame image are malformed") from exc
    found: dict[str, object] = {}
    if record.get("orientation") is None and orientation is not None:
        found["orientation"] = json.dumps(orientation)
    if record.get("pixel_spacing") is None and spacing is not None:
        found["pixel_spacing"] = json.dumps(spacing)
    if len(positions) == record["frames"] and all(p is not None for p in positions):
        found["frame_positions"] = json.dumps(positions)
        found["position"] = json.dumps(positions[0])
    return found


def _required(h: _Header, keyword: str, label: str) -> int:
    value = h.int(keyword)
    if not value or value < 0:
        raise Rejected(f"pixel data header is incomplete (no valid {label})")
    return value


def _pixel_description(h: _Header, raw: object, data: bytes, syntax: str) -> dict[str, object]:
    rows, columns = _required(h, "Rows", "Rows"), _required(h, "Columns", "Columns")
    bits, samples = _required(h, "BitsAllocated", "Bits Allocated"), h.int("SamplesPerPixel") or 1
    photometric = h.text("PhotometricInterpretation")
    if not photometric:
        raise Rejected("pixel data header is incomplete (no Photometric Interpretation)")
    frames = h.int("NumberOfFrames") or 1
    if frames < 1:
        raise Rejected("pixel data header is invalid (Number of Frames below 1)")
    value_tell = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", None)
    offset = None
    if value_tell is not None and length is not None and length != 0xFFFFFFFF:
        if value_tell + length > len(data) and syntax != DeflatedExplicitVRLittleEndian:
            raise Rejected("file is truncated inside the pixel data")
        per_pixel = 2 if photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") else samples
        expected = (rows * columns * per_pixel * bits + 7) // 8 * frames
        if length < expected and syntax != DeflatedExplicitVRLittleEndian:
            raise Rejected("pixel data is shorter than its header describes")
        if syntax in _NATIVE and bits in (8, 16, 32) and not getattr(raw, "value", None):
            offset = value_tell
    elif value_tell is not None:
        _check_fragments(data, value_tell)
    return dict(
        rows=rows, columns=columns, frames=frames, samples=samples, bits_allocated=bits,
        bits_stored=h.int("BitsStored") or bits,
        pixel_representation=h.int("PixelRepresentation") or 0, photometric=photometric,
        rescale_slope=h.float("RescaleSlope"), rescale_intercept=h.float("RescaleIntercept"),
        window_center=h.float("WindowCenter"), window_width=h.float("WindowWidth"),
        pixel_spacing=h.floats("PixelSpacing", 2),
        position=h.floats("ImagePositionPatient", 3),
        orientation=h.floats("ImageOrientationPatient", 6),
        pixel_offset=offset,
        needs_header=(photometric not in ("MONOCHROME1", "MONOCHROME2")
                      or any(h.has(k) for k in _PRESENTATION_KEYWORDS) or h.has_overlay()
                      or len(h.numbers("WindowCenter") or ()) > 1),
    )


def _check_fragments(data: bytes, value_tell: int) -> None:
    """Encapsulated pixel data must be a well-formed item sequence ending in a delimiter."""
    buffer = io.BytesIO(data)
    buffer.seek(value_tell)
    try:
        count = sum(1 for _ in generate_fragments(buffer))
    except Exception as exc:
        raise Rejected("compressed pixel data is damaged") from exc
    if count < 2:  # the basic offset table item plus at least one fragment
        raise Rejected("compressed pixel data holds no image fragment")
