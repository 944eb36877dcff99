"""Decoding stored instances into pixel arrays and the presentation their header asks for.

Native little-endian pixel data with only a linear rescale and window (the bulk of CT and MR) is
read straight from the decrypted bytes at the offset recorded at import, without re-parsing the
data set; everything else (compressed, big-endian, deflated, odd bit depths, float pixel data, LUTs,
palettes, overlays) goes through pydicom and its decoders (pylibjpeg: JPEG, JPEG-LS, JPEG 2000,
HTJ2K). A failure says which of these it is: pixel data that does not match its header, a
compression no decoder here reads, damaged compressed data, or damaged lookup tables.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.presentation import Presentation

_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _vector(text: str | None) -> tuple[float, ...] | None:
    return tuple(json.loads(text)) if text else None


@dataclass(frozen=True)
class FrameInfo:
    """What the index knows about one image instance: enough to decode and place it."""

    sop_uid: str
    study_uid: str
    blob_id: str
    sha256: str
    transfer_syntax: str
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    rescale_slope: float | None
    rescale_intercept: float | None
    window_center: float | None
    window_width: float | None
    pixel_spacing: tuple[float, ...] | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_offset: int | None
    number: int | None
    needs_header: bool = True  # LUTs, palette, overlays...; unknown (older imports) counts as yes
    frame_positions: tuple[tuple[float, ...], ...] | None = None  # enhanced multi-frame: per frame

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> FrameInfo:
        values: list[Any] = list(row)  # a database row: types as the columns store them
        for i in (17, 18, 19):  # pixel_spacing, position, orientation are stored as JSON
            values[i] = _vector(values[i])
        values[22] = values[22] is None or bool(values[22])
        if len(values) > 23:
            values[23] = tuple(tuple(p) for p in json.loads(values[23])) if values[23] else None
        return cls(*values)

    def frame_position(self, frame: int) -> tuple[float, ...] | None:
        return self.frame_positions[frame] if self.frame_positions else self.position

    @property
    def slope(self) -> float:
        return self.rescale_slope if self.rescale_slope is not None else 1.0

    @property
    def intercept(self) -> float:
        return self.rescale_intercept if self.rescale_intercept is not None else 0.0


@dataclass(frozen=True)
class Decoded:
    """One instance's frames, (frames, rows, columns[, samples]), and how to display them.

    ``thickness`` is the Slice Thickness when decoding read the header; otherwise ``header`` holds
    the bytes before the pixel data, read for it only when :attr:`slice_thickness` is asked for (the
    fast path parses no header, and scrolling and volume loading should not pay for it).
    """

    frames: np.ndarray
    presentation: Presentation
    thickness: float | None = None
    header: bytes = field(default=b"", repr=False)

    @cached_property
    def slice_thickness(self) -> float | None:
        """Slice Thickness in mm; None when the image does not say."""
        if self.thickness is not None or not self.header:
            return self.thickness
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(self.header), stop_before_pixels=True,
                                     specific_tags=["SliceThickness"])
        except Exception:  # the index read this header at import; a failure here only hides a number
            return None
        return _thickness(ds)


def native(info: FrameInfo) -> bool:
    """Whether the index alone describes the image (native grey pixels with only a linear rescale
    and window): its pixels are read from the recorded offset, no header parsed."""
    return (info.pixel_offset is not None and not info.needs_header and info.transfer_syntax in _NATIVE
            and info.samples == 1 and info.bits_allocated in (8, 16, 32))


def _native_dtype(info: FrameInfo) -> np.dtype[Any]:
    return np.dtype(f"<{'i' if info.pixel_representation else 'u'}{info.bits_allocated // 8}")


def native_size(info: FrameInfo) -> int:
    """Bytes of a :func:`native` image's pixel data."""
    return info.frames * info.rows * info.columns * (info.bits_allocated // 8)


def native_buffer(size: int) -> memoryview:
    """Room for ``size`` bytes of pixels, left unwritten until they arrive (no zero-filling)."""
    return np.empty(size, np.uint8).data


def native_decoded(info: FrameInfo, pixels: bytes | bytearray | memoryview | np.ndarray,
                   header: bytes = b"") -> Decoded:
    """A :func:`native` image from its pixel data's bytes (the values as stored)."""
    arr = np.frombuffer(pixels, _native_dtype(info), info.frames * info.rows * info.columns).reshape(
        info.frames, info.rows, info.columns)
    window = (Window(info.window_center, info.window_width)
              if info.window_center is not None and info.window_width and info.window_width >= 1
              else None)
    return Decoded(_mask_bits(arr, info),
                   Presentation.linear(info.photometric, info.slope, info.intercept, window), header=header)


def decode_frames(info: FrameInfo, data: bytes) -> Decoded:
    if native(info):
        assert info.pixel_offset is not None
        return native_decoded(info, memoryview(data)[info.pixel_offset:info.pixel_offset + native_size(info)],
                              data[:info.pixel_offset])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            _complete_pixel_module(ds, info)
            arr = ds.pixel_array
        except Exception as exc:  # decoder messages are technical and may quote the data
            raise _decoding_failure(info.transfer_syntax) from exc
        try:
            presentation = Presentation.from_dataset(ds)
        except Exception as exc:
            raise CustodianError("This image could not be shown: its lookup tables or per-frame display "
                                 "values are damaged.") from exc
    frames_first = arr.ndim == (4 if info.samples > 1 else 3)
    return Decoded(arr if frames_first else arr[np.newaxis], presentation, _thickness(ds))


def _complete_pixel_module(ds: Dataset, info: FrameInfo) -> None:
    """Fill in the Image Pixel attributes pydicom requires and older devices (ultrasound, secondary
    capture, palette colour) leave out, with the values the import recorded: Samples per Pixel 1,
    Bits Stored equal to Bits Allocated, unsigned pixels, colour by pixel. Float pixel data needs none."""
    if "PixelData" not in ds:
        return
    implied: dict[str, int] = {"SamplesPerPixel": info.samples, "BitsStored": info.bits_stored,
                               "PixelRepresentation": info.pixel_representation}
    if info.samples > 1:
        implied["PlanarConfiguration"] = 0
    for keyword, value in implied.items():
        if ds.get(keyword) in (None, ""):
            setattr(ds, keyword, value)


def _decoding_failure(transfer_syntax: str) -> CustodianError:
    """What is wrong with pixels pydicom could not decode, as far as the transfer syntax tells."""
    syntax = UID(transfer_syntax)
    if syntax.is_transfer_syntax and not syntax.is_compressed:
        return CustodianError("This image could not be decoded: its pixel data does not match what its "
                              "header describes (size, bit depth or samples per pixel).")
    try:
        available = syntax.is_transfer_syntax and get_decoder(syntax).is_available
    except NotImplementedError:  # pydicom has no decoder at all for it (video, private syntaxes)
        available = False
    name = syntax.name if syntax.is_transfer_syntax else f"transfer syntax {syntax}"
    if not available:
        return CustodianError(f"This image could not be decoded: no decoder on this workstation reads "
                              f"its compression ({name}).")
    return CustodianError(f"This image could not be decoded: its compressed pixel data ({name}) is damaged.")


def _thickness(ds: Dataset) -> float | None:
    """Slice Thickness, or an enhanced image's from its shared Pixel Measures; None if absent."""
    value = ds.get("SliceThickness")
    if value in (None, ""):
        shared = ds.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        value = measures[0].get("SliceThickness") if measures else None
    try:
        thickness = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return None
    return thickness if thickness > 0 else None


def _mask_bits(arr: np.ndarray, info: FrameInfo) -> np.ndarray:
    """Honour Bits Stored below Bits Allocated: drop high bits, sign-extend signed data."""
    unused = info.bits_allocated - info.bits_stored
    if unused <= 0:
        return arr
    if info.pixel_representation:
        return (arr << unused) >> unused
    return arr & np.array((1 << info.bits_stored) - 1, dtype=arr.dtype)
