"""Decoding stored instances into pixel arrays.

Native little-endian pixel data (the bulk of CT and MR) is read straight from the decrypted
bytes at the offset recorded at import, without re-parsing the data set; everything else
(compressed, big-endian, deflated, odd bit depths) goes through pydicom and its decoders.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.errors import CustodianError

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

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> FrameInfo:
        values = list(row)
        for i in (17, 18, 19):  # pixel_spacing, position, orientation are stored as JSON
            values[i] = _vector(values[i])
        return cls(*values)

    @property
    def slope(self) -> float:
        return self.rescale_slope if self.rescale_slope is not None else 1.0

    @property
    def intercept(self) -> float:
        return self.rescale_intercept if self.rescale_intercept is not None else 0.0


def decode_frames(info: FrameInfo, data: bytes) -> np.ndarray:
    """All frames of one instance: (frames, rows, columns) or (frames, rows, columns, samples)."""
    if (info.pixel_offset is not None and info.transfer_syntax in _NATIVE and info.samples == 1
            and info.bits_allocated in (8, 16, 32)):
        dtype = np.dtype(f"<{'i' if info.pixel_representation else 'u'}{info.bits_allocated // 8}")
        count = info.frames * info.rows * info.columns
        arr = np.frombuffer(data, dtype, count, info.pixel_offset).reshape(
            info.frames, info.rows, info.columns)
        return _mask_bits(arr, info)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pydicom.dcmread(io.BytesIO(data)).pixel_array
    except Exception as exc:  # decoder messages are technical and may quote the data
        raise CustodianError(
            "This image could not be decoded (damaged compressed data, or no decoder for its "
            "transfer syntax on this workstation)."
        ) from exc
    frames_first = arr.ndim == (4 if info.samples > 1 else 3)
    return arr if frames_first else arr[np.newaxis]


def _mask_bits(arr: np.ndarray, info: FrameInfo) -> np.ndarray:
    """Honour Bits Stored below Bits Allocated: drop high bits, sign-extend signed data."""
    unused = info.bits_allocated - info.bits_stored
    if unused <= 0:
        return arr
    if info.pixel_representation:
        return (arr << unused) >> unused
    return arr & np.array((1 << info.bits_stored) - 1, dtype=arr.dtype)
