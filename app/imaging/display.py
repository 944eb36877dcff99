"""From stored values to displayed grey levels: modality rescale, then the VOI window.

The linear window follows DICOM PS3.3 C.11.2.1.2.1; MONOCHROME1 is inverted after windowing so
that "higher value = darker" holds as the modality meant it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    center: float
    width: float

    def __post_init__(self) -> None:
        if not self.width >= 1:
            raise ValueError(f"Window width must be at least 1, not {self.width}")


# Window presets of CT (centre, width in HU), in the order the function keys F2… select them.
CT_PRESETS: dict[str, Window] = {
    "Brain": Window(40, 80),
    "Subdural": Window(75, 215),
    "Stroke": Window(40, 40),
    "Lung": Window(-600, 1500),
    "Mediastinum": Window(50, 350),
    "Abdomen": Window(40, 400),
    "Liver": Window(60, 160),
    "Bone": Window(400, 1800),
}


def modality_values(raw: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    values = raw.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def auto_window(values: np.ndarray) -> Window:
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0))


def apply_window(values: np.ndarray, window: Window, *, invert: bool = False) -> np.ndarray:
    """Grey levels 0–255 for modality values, as PS3.3 C.11.2.1.2.1 defines the linear function."""
    c, w = np.float32(window.center - 0.5), np.float32(max(window.width - 1.0, 1e-6))
    scaled = (values - c) / w + np.float32(0.5)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    if invert:
        scaled = 1.0 - scaled
    return np.rint(scaled * np.float32(255.0)).astype(np.uint8)


def to_rgb8(frame: np.ndarray) -> np.ndarray:
    """Colour frames for display: 8-bit RGB, scaled down from higher bit depths."""
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame[..., :3])
    top = float(frame.max()) or 1.0
    return np.rint(frame[..., :3].astype(np.float32) * (255.0 / top)).astype(np.uint8)
