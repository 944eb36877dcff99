"""Measurements on one frame: distance, angle, ellipse ROI and text, in the image's own units.

Points are image coordinates (x = column, y = row, in pixels, pixel centres at whole numbers), so
a measurement stays on the anatomy whatever the zoom, pan or rotation of the view. Lengths use
Pixel Spacing (row spacing, column spacing in mm); without it they are given in pixels and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

Point = tuple[float, float]


class Kind(StrEnum):
    DISTANCE = "distance"
    ANGLE = "angle"
    ELLIPSE = "ellipse"
    TEXT = "text"


POINTS = {Kind.DISTANCE: 2, Kind.ANGLE: 3, Kind.ELLIPSE: 2, Kind.TEXT: 1}


@dataclass(frozen=True)
class Measurement:
    kind: Kind
    sop_uid: str
    frame: int
    points: tuple[Point, ...]  # distance: ends; angle: arm, vertex, arm; ellipse: box corners
    text: str = ""  # a text annotation's words
    id: int | None = None  # the vault's number once saved

    def __post_init__(self) -> None:
        if len(self.points) != POINTS[self.kind]:
            raise ValueError(f"A {self.kind} needs {POINTS[self.kind]} points, not {len(self.points)}.")

    def saved_as(self, ident: int) -> Measurement:
        return replace(self, id=ident)


@dataclass(frozen=True)
class RoiStats:
    mean: float
    sd: float
    area: float  # mm² with spacing, else pixels
    pixels: int
    unit: str  # the values' unit, e.g. HU; "" when the modality has none


def modality_unit(modality: str) -> str:
    return "HU" if modality == "CT" else ""


def _scale(spacing: tuple[float, ...] | None) -> tuple[float, float, bool]:
    """mm per pixel along x (columns) and y (rows), and whether they are real millimetres."""
    if spacing and len(spacing) >= 2 and spacing[0] > 0 and spacing[1] > 0:
        return float(spacing[1]), float(spacing[0]), True
    return 1.0, 1.0, False


def distance(p: Point, q: Point, spacing: tuple[float, ...] | None) -> tuple[float, str]:
    sx, sy, mm = _scale(spacing)
    return math.hypot((q[0] - p[0]) * sx, (q[1] - p[1]) * sy), "mm" if mm else "px"


def angle(a: Point, vertex: Point, b: Point, spacing: tuple[float, ...] | None) -> float:
    """The angle at ``vertex`` in degrees, true to anisotropic pixels."""
    sx, sy, _ = _scale(spacing)
    u = ((a[0] - vertex[0]) * sx, (a[1] - vertex[1]) * sy)
    v = ((b[0] - vertex[0]) * sx, (b[1] - vertex[1]) * sy)
    if math.hypot(*u) == 0 or math.hypot(*v) == 0:
        return 0.0
    return abs(math.degrees(math.atan2(u[0] * v[1] - u[1] * v[0], u[0] * v[0] + u[1] * v[1])))


def ellipse_mask(shape: tuple[int, int], p: Point, q: Point) -> np.ndarray:
    """The pixels whose centres lie inside the ellipse inscribed in the box with corners p and q."""
    cx, cy = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    rx, ry = abs(q[0] - p[0]) / 2, abs(q[1] - p[1]) / 2
    if rx == 0 or ry == 0:
        return np.zeros(shape, bool)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def ellipse_stats(values: np.ndarray, p: Point, q: Point, spacing: tuple[float, ...] | None,
                  unit: str) -> RoiStats:
    inside = values[ellipse_mask(values.shape[:2], p, q)]
    sx, sy, _ = _scale(spacing)
    area = math.pi * abs(q[0] - p[0]) / 2 * sx * abs(q[1] - p[1]) / 2 * sy
    if inside.size == 0:
        return RoiStats(math.nan, math.nan, area, 0, unit)
    return RoiStats(float(inside.mean()), float(inside.std()), area, int(inside.size), unit)


def label(m: Measurement, values: np.ndarray | None, spacing: tuple[float, ...] | None,
          unit: str) -> str:
    """What a reader sees beside the measurement."""
    if m.kind is Kind.DISTANCE:
        p, q = m.points
        length, units = distance(p, q, spacing)
        return f"{length:.1f} {units}"
    if m.kind is Kind.ANGLE:
        a, vertex, b = m.points
        return f"{angle(a, vertex, b, spacing):.1f}°"
    if m.kind is Kind.TEXT:
        return m.text
    if values is None:
        return ""
    p, q = m.points
    stats = ellipse_stats(values, p, q, spacing, unit)
    area_unit = "mm²" if _scale(spacing)[2] else "px²"
    suffix = f" {unit}" if unit else ""
    if stats.pixels == 0:
        return f"Area {stats.area:.1f} {area_unit}"
    return (f"Mean {stats.mean:.1f}{suffix}  SD {stats.sd:.1f}{suffix}\n"
            f"Area {stats.area:.1f} {area_unit}")
