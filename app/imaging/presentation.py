"""How one instance's stored values become display values, as its header says.

Most CT and MR need only the linear rescale and a window, which the index already holds; for
those :meth:`Presentation.linear` avoids parsing the header at all. Everything else the header may
ask for (Modality and VOI LUT sequences, non-linear VOI functions, Presentation LUT Shape, palette
colour, overlay planes, per-frame values of enhanced multi-frame images) is read by
:meth:`Presentation.from_dataset` and applied with pydicom's own LUT functions, so the grey levels
are the ones the standard and pydicom agree on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing

from app.imaging.display import Window, apply_window, auto_window, modality_values, to_rgb8
from app.imaging.voi_table import TableWindow

# What the LUT functions read; a trimmed copy of the header keeps no demographics in memory.
_DISPLAY_KEYWORDS = (
    "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "Rows", "Columns", "NumberOfFrames", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter", "WindowWidth",
    "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence", "PresentationLUTShape",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "SegmentedAlphaPaletteColorLookupTableData",
)
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
# The grey display range the VOI functions map to (an 8-bit unsigned "stored" range).
_EIGHT_BIT = Dataset()
_EIGHT_BIT.BitsStored = 8
_EIGHT_BIT.PixelRepresentation = 0
_EIGHT_BIT.PhotometricInterpretation = "MONOCHROME2"  # inversion is applied afterwards


def _numbers(value: Any) -> list[float]:  # an element's value, as pydicom gives it
    if value is None or value == "":
        return []
    return [float(v) for v in value] if isinstance(value, MultiValue | list | tuple) else [float(value)]


def _number(item: Dataset, keyword: str, default: float) -> float:
    value = item.get(keyword)
    return default if value is None or value == "" else float(value)


def _windows(item: Dataset) -> tuple[Window, ...]:
    """The windows an item stores; invalid widths (below 1) are skipped, not shown wrongly."""
    centers, widths = _numbers(item.get("WindowCenter")), _numbers(item.get("WindowWidth"))
    return tuple(Window(c, w) for c, w in zip(centers, widths, strict=False) if w >= 1)


@dataclass(frozen=True)
class Overlay:
    """One overlay plane: a mask placed on the image (PS3.3 C.9.2), drawn above the pixels."""

    mask: np.ndarray  # bool, (frames, rows, columns) or (rows, columns) for all frames
    origin: tuple[int, int]  # row, column of the mask's first pixel in the image, 0-based
    first_frame: int = 0  # a multi-frame overlay's first image frame, 0-based

    def plane(self, frame: int) -> np.ndarray | None:
        if self.mask.ndim == 2:
            return self.mask
        i = frame - self.first_frame
        return self.mask[i] if 0 <= i < len(self.mask) else None


@dataclass(frozen=True)
class FrameValues:
    """Per-frame rescale and windows from an enhanced image's functional groups."""

    slope: float = 1.0
    intercept: float = 0.0
    windows: tuple[Window, ...] = ()


@dataclass(frozen=True)
class Presentation:
    photometric: str
    slope: float = 1.0
    intercept: float = 0.0
    windows: tuple[Window, ...] = ()
    inverted: bool = False  # MONOCHROME1, or a Presentation LUT Shape of INVERSE
    header: Dataset | None = None  # the trimmed header, when LUTs or a palette need it
    modality_lut: bool = False
    voi_lut: bool = False
    nonlinear: bool = False  # a VOI LUT Function other than LINEAR
    overlays: tuple[Overlay, ...] = ()
    frames: tuple[FrameValues, ...] = field(default=(), repr=False)

    @classmethod
    def linear(cls, photometric: str, slope: float, intercept: float,
               window: Window | None) -> Presentation:
        return cls(photometric, slope, intercept, (window,) if window else (),
                   inverted=photometric == "MONOCHROME1")

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Presentation:
        header = Dataset()
        implicit_vr, little_endian = ds.original_encoding
        header.set_original_encoding(implicit_vr, little_endian, ds.original_character_set)
        for keyword in _DISPLAY_KEYWORDS:
            if keyword in ds:
                element = ds[keyword]
                header[element.tag] = element
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(
                photometric,
                _number(ds, "RescaleSlope", 1.0), _number(ds, "RescaleIntercept", 0.0),
                _windows(ds),
                inverted=photometric == "MONOCHROME1"
                or str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE",
                header=header,
                modality_lut="ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence) > 0,
                voi_lut="VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0,
                nonlinear=function != "LINEAR",
                overlays=_overlays(ds),
                frames=_frame_values(ds),
            )

    def _lut_header(self) -> Dataset:
        """The trimmed header, which a presentation with LUTs or a non-linear VOI always has."""
        assert self.header is not None, "only from_dataset() sets LUTs, and it keeps the header"
        return self.header

    # ------------------------------------------------------------------ grey
    def _frame(self, frame: int) -> FrameValues | None:
        return self.frames[frame] if frame < len(self.frames) else None

    def modality(self, raw: np.ndarray, frame: int = 0) -> np.ndarray:
        """Modality values (e.g. Hounsfield units) of one frame's stored values."""
        if self.modality_lut:
            return apply_modality_lut(raw, self._lut_header()).astype(np.float32)
        values = self._frame(frame)
        if values is not None:
            return modality_values(raw, values.slope, values.intercept)
        return modality_values(raw, self.slope, self.intercept)

    def stored_windows(self, frame: int = 0) -> tuple[Window, ...]:
        values = self._frame(frame)
        return values.windows if values is not None and values.windows else self.windows

    def default_window(self, values: np.ndarray, frame: int = 0) -> Window:
        """The first stored window, else the VOI LUT's input range, else the frame's value range."""
        stored = self.stored_windows(frame)
        if stored:
            return stored[0]
        if self.voi_lut:
            entries, first, _ = self._lut_header().VOILUTSequence[0].LUTDescriptor
            entries = entries or 65536
            return Window(first + entries / 2, max(float(entries), 1.0))
        return auto_window(values)

    def grey(self, values: np.ndarray, window: Window | None, *, invert: bool = False,
             frame: int = 0) -> np.ndarray:
        """8-bit grey levels: the reader's window (or a chosen VOI LUT), else the stored VOI LUT or
        default window."""
        flip = self.inverted != invert
        if isinstance(window, TableWindow):  # a presentation state's VOI LUT, through its table
            levels = window.levels(values)
            return _to_uint8(255.0 - levels if flip else levels)
        if window is None and self.voi_lut:
            # The LUT is indexed by whole modality values; fractional rescales are rounded.
            header = self._lut_header()
            out = apply_voi_lut(np.rint(values).astype(np.int32), header, prefer_lut=True)
            bits = int(header.VOILUTSequence[0].LUTDescriptor[2]) or 16
            scaled = out.astype(np.float32) * np.float32(255.0 / ((1 << bits) - 1))
            return _to_uint8(255.0 - scaled if flip else scaled)
        window = window or self.default_window(values, frame)
        if self.nonlinear:  # LINEAR_EXACT or SIGMOID: pydicom's functions, mapped to 0–255
            item = Dataset()
            item.update(_EIGHT_BIT)
            item.VOILUTFunction = self._lut_header().VOILUTFunction
            item.WindowCenter, item.WindowWidth = window.center, window.width
            out = apply_windowing(values.astype(np.float64), item)
            return _to_uint8(255.0 - out if flip else out)
        return apply_window(values, window, invert=flip)

    # ------------------------------------------------------------------ colour
    def colour(self, raw: np.ndarray) -> np.ndarray:
        """8-bit RGB for colour frames: palette colour through its LUTs, RGB as decoded."""
        if self.photometric == "PALETTE COLOR":
            rgb = apply_color_lut(raw, self.header)
            if rgb.dtype != np.uint8:  # 16-bit palette entries
                rgb = rgb.astype(np.float32) * np.float32(255.0 / 65535.0)
                return _to_uint8(rgb)[..., :3]
            return np.ascontiguousarray(rgb[..., :3])
        return to_rgb8(raw)

    @property
    def is_colour(self) -> bool:
        return self.photometric == "PALETTE COLOR" or self.photometric.startswith(("RGB", "YBR"))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 255)).astype(np.uint8)


def _overlays(ds: Dataset) -> tuple[Overlay, ...]:
    """Graphics overlays stored in the image (ROI overlays carry no drawing, so are left out)."""
    found = []
    for group in _OVERLAY_GROUPS:
        if (group, 0x3000) not in ds or str(ds.get((group, 0x0040), "G").value).strip() == "R":
            continue
        try:
            mask = ds.overlay_array(group).astype(bool)
        except Exception:  # a damaged plane is not drawn; the image itself stays readable
            continue
        origin = ds.get((group, 0x0050))
        row, col = (int(origin.value[0]) - 1, int(origin.value[1]) - 1) if origin else (0, 0)
        first = ds.get((group, 0x0051))
        found.append(Overlay(mask, (row, col), int(first.value) - 1 if first else 0))
    return tuple(found)


def _frame_values(ds: Dataset) -> tuple[FrameValues, ...]:
    """Rescale and windows of each frame of an enhanced image (shared, then per-frame groups)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not per_frame and not shared:
        return ()
    base = shared[0] if shared else Dataset()
    out = []
    for item in per_frame or [Dataset()] * int(ds.get("NumberOfFrames", 1) or 1):
        slope, intercept = 1.0, 0.0
        windows: tuple[Window, ...] = ()
        for source in (base, item):  # per-frame values override the shared ones
            for transform in source.get("PixelValueTransformationSequence") or []:
                slope = _number(transform, "RescaleSlope", slope)
                intercept = _number(transform, "RescaleIntercept", intercept)
            for voi in source.get("FrameVOILUTSequence") or []:
                windows = _windows(voi) or windows
        out.append(FrameValues(slope, intercept, windows))
    return tuple(out)
