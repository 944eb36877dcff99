"""Measurements on one frame: lengths, angles, Cobb angles, arrows, ROIs and text, in the image's
own units.

Points are image coordinates (x = column, y = row, in pixels, pixel centres at whole numbers), so
a measurement stays on the anatomy whatever the zoom, pan or rotation of the view. Lengths and areas
use Pixel Spacing (row spacing, column spacing in mm); without it they are given in pixels and say
so. ROI statistics are of the modality values (Hounsfield units for CT), never the display values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import pairwise

import numpy as np

Point = tuple[float, float]


class Kind(StrEnum):
    DISTANCE = "distance"
    ANGLE = "angle"
    ELLIPSE = "ellipse"
    TEXT = "text"
    COBB = "cobb"
    ARROW = "arrow"
    RECTANGLE = "rectangle"
    FREEHAND = "freehand"


# Points each kind is made of; a freehand outline has at least FREEHAND_POINTS.
POINTS = {Kind.DISTANCE: 2, Kind.ANGLE: 3, Kind.ELLIPSE: 2, Kind.TEXT: 1, Kind.COBB: 4, Kind.ARROW: 2,
          Kind.RECTANGLE: 2}
FREEHAND_POINTS = 3
ROIS = (Kind.ELLIPSE, Kind.RECTANGLE, Kind.FREEHAND)


@dataclass(frozen=True)
class Measurement:
    kind: Kind
    sop_uid: str
    frame: int
    # distance and arrow: ends (an arrow's head last); angle: arm, vertex, arm; Cobb: two lines of two
    # points; ellipse and rectangle: box corners; freehand: the outline; text: where it is
    points: tuple[Point, ...]
    text: str = ""  # a text annotation's or an arrow's words
    id: int | None = None  # the vault's number once saved

    def __post_init__(self) -> None:
        if self.kind is Kind.FREEHAND:
            if len(self.points) < FREEHAND_POINTS:
                raise ValueError(f"A freehand outline needs at least {FREEHAND_POINTS} points.")
        elif len(self.points) != POINTS[self.kind]:
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
    minimum: float = math.nan
    maximum: float = math.nan


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


def cobb_angle(first: tuple[Point, Point], second: tuple[Point, Point],
               spacing: tuple[float, ...] | None) -> float:
    """The Cobb angle between two endplate lines, in degrees (0 to 180).

    Each line is taken from its left end to its right end, whichever way it was drawn, so a curve
    beyond 90° (endplates tilted 50° each way) reads 100°, not the acute 80° between the lines."""
    sx, sy, _ = _scale(spacing)

    def direction(line: tuple[Point, Point]) -> tuple[float, float]:
        (x0, y0), (x1, y1) = sorted(line)
        return (x1 - x0) * sx, (y1 - y0) * sy

    u, v = direction(first), direction(second)
    if math.hypot(*u) == 0 or math.hypot(*v) == 0:
        return 0.0
    return abs(math.degrees(math.atan2(u[0] * v[1] - u[1] * v[0], u[0] * v[0] + u[1] * v[1])))


def polygon_area(points: tuple[Point, ...] | list[Point], spacing: tuple[float, ...] | None) -> float:
    """The area inside a closed outline (shoelace formula), in mm² with spacing, else pixels."""
    sx, sy, _ = _scale(spacing)
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairwise([*points, points[0]]))
    return abs(twice) / 2 * sx * sy


def ellipse_mask(shape: tuple[int, int], p: Point, q: Point) -> np.ndarray:
    """The pixels whose centres lie inside the ellipse inscribed in the box with corners p and q."""
    cx, cy = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    rx, ry = abs(q[0] - p[0]) / 2, abs(q[1] - p[1]) / 2
    if rx == 0 or ry == 0:
        return np.zeros(shape, bool)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def rectangle_mask(shape: tuple[int, int], p: Point, q: Point) -> np.ndarray:
    """The pixels whose centres lie inside the box with corners p and q (edges included)."""
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    (x0, x1), (y0, y1) = sorted((p[0], q[0])), sorted((p[1], q[1]))
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


def polygon_mask(shape: tuple[int, int], points: tuple[Point, ...] | list[Point]) -> np.ndarray:
    """The pixels whose centres lie inside the closed outline (even-odd rule), tested only within
    the outline's bounding box."""
    mask = np.zeros(shape, bool)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    left, top = max(0, math.ceil(min(xs))), max(0, math.ceil(min(ys)))
    right, bottom = min(shape[1] - 1, math.floor(max(xs))), min(shape[0] - 1, math.floor(max(ys)))
    if left > right or top > bottom:
        return mask
    yy, xx = np.mgrid[top:bottom + 1, left:right + 1]
    inside = np.zeros(yy.shape, bool)
    for (x0, y0), (x1, y1) in pairwise([*points, points[0]]):
        if y0 == y1:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (yy >= min(y0, y1)) & (yy < max(y0, y1))
        inside ^= crosses & (xx < x0 + (yy - y0) * (x1 - x0) / (y1 - y0))
    mask[top:bottom + 1, left:right + 1] = inside
    return mask


def roi_mask(kind: Kind, shape: tuple[int, int], points: tuple[Point, ...]) -> np.ndarray:
    if kind is Kind.ELLIPSE:
        return ellipse_mask(shape, points[0], points[1])
    if kind is Kind.RECTANGLE:
        return rectangle_mask(shape, points[0], points[1])
    return polygon_mask(shape, points)


def roi_area(kind: Kind, points: tuple[Point, ...], spacing: tuple[float, ...] | None) -> float:
    sx, sy, _ = _scale(spacing)
    if kind is Kind.FREEHAND:
        return polygon_area(points, spacing)
    (p, q) = points
    box = abs(q[0] - p[0]) * sx * abs(q[1] - p[1]) * sy
    return box * math.pi / 4 if kind is Kind.ELLIPSE else box


def roi_stats(kind: Kind, values: np.ndarray, points: tuple[Point, ...], spacing: tuple[float, ...] | None,
              unit: str) -> RoiStats:
    """Mean, SD, minimum and maximum of the (grey) values inside an ellipse, box or outline."""
    inside = values[roi_mask(kind, values.shape[:2], points)]
    area = roi_area(kind, points, spacing)
    if inside.size == 0:
        return RoiStats(math.nan, math.nan, area, 0, unit)
    return RoiStats(float(inside.mean()), float(inside.std()), area, int(inside.size), unit,
                    float(inside.min()), float(inside.max()))


def ellipse_stats(values: np.ndarray, p: Point, q: Point, spacing: tuple[float, ...] | None,
                  unit: str) -> RoiStats:
    return roi_stats(Kind.ELLIPSE, values, (p, q), spacing, unit)


def probe(values: np.ndarray, point: Point, unit: str) -> str:
    """The stored value under ``point`` in the modality's unit ("" outside the image)."""
    col, row = round(point[0]), round(point[1])
    if not (0 <= row < values.shape[0] and 0 <= col < values.shape[1]):
        return ""
    value = values[row, col]
    if np.ndim(value):  # a colour pixel
        return f"({col}, {row})  RGB " + " ".join(f"{float(v):g}" for v in value)
    return f"({col}, {row})  {float(value):.1f}{f' {unit}' if unit else ''}"


def label(m: Measurement, values: np.ndarray | None, spacing: tuple[float, ...] | None,
          unit: str) -> str:
    """What a reader sees beside the measurement."""
    if m.kind in (Kind.DISTANCE, Kind.ANGLE, Kind.COBB):
        return _line_label(m, spacing)
    if m.kind in (Kind.TEXT, Kind.ARROW):
        return m.text
    area_unit = "mm²" if _scale(spacing)[2] else "px²"
    area = f"Area {roi_area(m.kind, m.points, spacing):.1f} {area_unit}"
    if values is None or values.ndim != 2:
        return area
    stats = roi_stats(m.kind, values, m.points, spacing, unit)
    suffix = f" {unit}" if unit else ""
    if stats.pixels == 0:
        return area
    return (f"Mean {stats.mean:.1f}{suffix}  SD {stats.sd:.1f}{suffix}\n"
            f"Min {stats.minimum:.1f}{suffix}  Max {stats.maximum:.1f}{suffix}\n{area}")


def _line_label(m: Measurement, spacing: tuple[float, ...] | None) -> str:
    if m.kind is Kind.DISTANCE:
        p, q = m.points
        length, units = distance(p, q, spacing)
        return f"{length:.1f} {units}"
    if m.kind is Kind.ANGLE:
        a, vertex, b = m.points
        return f"{angle(a, vertex, b, spacing):.1f}°"
    a, b, c, d = m.points
    return f"Cobb {cobb_angle((a, b), (c, d), spacing):.1f}°"
