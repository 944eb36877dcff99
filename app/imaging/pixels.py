"""Decoding stored instances into pixel arrays and the presentation their header asks for.

Native little-endian pixel data with only a linear rescale and window (the bulk of CT and MR) is
read straight from the decrypted bytes at the offset recorded at import, without re-parsing the
data set; everything else (compressed, big-endian, deflated, odd bit depths, LUTs, palettes,
overlays) goes through pydicom and its decoders (pylibjpeg: JPEG, JPEG-LS, JPEG 2000, HTJ2K).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

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
    """One instance's frames, (frames, rows, columns[, samples]), and how to display them."""

    frames: np.ndarray
    presentation: Presentation


def decode_frames(info: FrameInfo, data: bytes) -> Decoded:
    if (info.pixel_offset is not None and not info.needs_header and info.transfer_syntax in _NATIVE
            and info.samples == 1 and info.bits_allocated in (8, 16, 32)):
        dtype = np.dtype(f"<{'i' if info.pixel_representation else 'u'}{info.bits_allocated // 8}")
        count = info.frames * info.rows * info.columns
        arr = np.frombuffer(data, dtype, count, info.pixel_offset).reshape(
            info.frames, info.rows, info.columns)
        window = (Window(info.window_center, info.window_width)
                  if info.window_center is not None and info.window_width and info.window_width >= 1
                  else None)
        return Decoded(_mask_bits(arr, info),
                       Presentation.linear(info.photometric, info.slope, info.intercept, window))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            arr = ds.pixel_array
            presentation = Presentation.from_dataset(ds)
    except Exception as exc:  # decoder messages are technical and may quote the data
        raise CustodianError(
            "This image could not be decoded (damaged compressed data, or no decoder for its "
            "transfer syntax on this workstation)."
        ) from exc
    frames_first = arr.ndim == (4 if info.samples > 1 else 3)
    return Decoded(arr if frames_first else arr[np.newaxis], presentation)


def _mask_bits(arr: np.ndarray, info: FrameInfo) -> np.ndarray:
    """Honour Bits Stored below Bits Allocated: drop high bits, sign-extend signed data."""
    unused = info.bits_allocated - info.bits_stored
    if unused <= 0:
        return arr
    if info.pixel_representation:
        return (arr << unused) >> unused
    return arr & np.array((1 << info.bits_stored) - 1, dtype=arr.dtype)
