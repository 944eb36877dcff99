"""The application profile of export media: General Purpose Interchange (PS3.11 STD-GEN-CD for the
CD image, STD-GEN-USB for the USB stick and the e-mail zip).

The General Purpose profiles are the ones every DICOM reader on a recipient's computer accepts:
every file is Part 10 with its meta header and in Explicit VR Little Endian. The vault keeps what
it received (big endian, deflated, implicit VR, JPEG, JPEG-LS, JPEG 2000, RLE, or a file without a
Part 10 header); on the way to the media such an instance is transcoded losslessly: decoded once,
never compressed again, with the same SOP Instance UID (a change of transfer syntax is not a new
instance). A lossy-compressed source stays marked as lossy (Lossy Image Compression 01).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from app.errors import CustodianError

NAME = "General Purpose Interchange (STD-GEN-CD / STD-GEN-USB): Explicit VR Little Endian"
TRANSFER_SYNTAX = ExplicitVRLittleEndian


def _already_fit(data: bytes) -> bool:
    """A Part 10 file whose meta header says Explicit VR Little Endian goes on as it is (the
    usual case: the cost of an export stays that of copying the bytes). The meta group is
    always Explicit VR Little Endian, so it is read here without parsing the dataset."""
    if data[128:132] != b"DICM":
        return False
    found: dict[int, bytes] = {}
    at = 132
    while at + 8 <= len(data) and struct.unpack_from("<H", data, at)[0] == 0x0002:
        element, vr = struct.unpack_from("<H", data, at + 2)[0], data[at + 4: at + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,), at = struct.unpack_from("<I", data, at + 8), at + 12
        else:
            (length,), at = struct.unpack_from("<H", data, at + 6), at + 8
        found[element] = data[at: at + length].rstrip(b"\0 ")
        at += length
    return found.get(0x0010) == TRANSFER_SYNTAX.encode() and bool(found.get(0x0003))


def for_media(data: bytes, patient_id: str | None = None) -> bytes:
    """An instance's bytes as the profile wants them on the media; ``patient_id``, where given,
    replaces the instance's own (a patient without one gets an ID for the media)."""
    if patient_id is None and _already_fit(data):
        return data
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            raise CustodianError("An instance has no SOP Class or Instance UID")
        if patient_id is not None:
            ds.PatientID = patient_id
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed:
            ds.decompress(generate_instance_uid=False)
        elif not ds.original_encoding[1]:
            _to_little_endian(ds)
        for _ in ds.iterall():  # every value decoded from its source encoding before it is re-encoded
            pass
        ds.set_original_encoding(False, True, ds.original_character_set)
        ds.file_meta = _meta(ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except CustodianError:
        raise
    except Exception as exc:  # a decoder's own failure, whatever its type: say which instance kind
        raise CustodianError(f"An instance could not be written in the media's transfer syntax "
                             f"({type(exc).__name__}).") from None
    return out.getvalue()


def _to_little_endian(ds: Dataset) -> None:
    """Binary values of a big-endian source in little-endian order: the writer re-encodes numbers
    and text, but OW/OF/OL/OD bytes (pixels, overlays, LUTs) are written as they are."""
    if "PixelData" in ds:
        pixels = ds.pixel_array
        if ds.BitsAllocated == 1:
            ds.PixelData = pack_bits(pixels)
        else:
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
        if ds.get("SamplesPerPixel", 1) > 1:
            ds.PlanarConfiguration = 0  # the decoded array is colour-by-pixel
    for elem in ds.iterall():
        size = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(elem.VR)
        if size and elem.tag != 0x7FE00010 and isinstance(elem.value, bytes) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()


def _meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = TRANSFER_SYNTAX
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta

