"""Where a frame lies in the patient: orientation letters, matching slices, reference lines.

Coordinates are DICOM patient coordinates (LPS: +x left, +y posterior, +z head) in mm, from
Image Position and Image Orientation (Patient). Everything here is plain numpy, so the viewer's
synchronisation and reference lines are tested without a screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # + and - direction of each patient axis
OBLIQUE_SHARE = 0.25  # a secondary axis is named when it carries at least this much of the vector


def direction_letters(vector: Sequence[float] | np.ndarray) -> str:
    """e.g. (1, 0, 0) -> "L", (0, -0.7, -0.7) -> "AF": the main axes first."""
    v = np.asarray(vector, float)
    order = np.argsort(-np.abs(v))
    return "".join(_LETTERS[i][0 if v[i] > 0 else 1] for i in order if abs(v[i]) >= OBLIQUE_SHARE)


def edge_letters(orientation: Sequence[float], rotation: int = 0, flip_h: bool = False,
                 flip_v: bool = False) -> dict[str, str]:
    """The patient direction at each screen edge ("left", "right", "top", "bottom").

    ``rotation`` is the view's clockwise turn in degrees (a multiple of 90); flips are applied
    on screen after it, as the viewer does.
    """
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    right, down = row, col  # unrotated: columns run right, rows run down
    for _ in range((rotation // 90) % 4):  # turning clockwise: what was at the top is now right
        right, down = -down, right
    if flip_h:
        right = -right
    if flip_v:
        down = -down
    return {"right": direction_letters(right), "left": direction_letters(-right),
            "bottom": direction_letters(down), "top": direction_letters(-down)}


@dataclass(frozen=True)
class Plane:
    """One frame's plane: origin (centre of the first pixel), unit row/column vectors, spacing."""

    origin: np.ndarray
    row: np.ndarray  # direction of increasing column index
    col: np.ndarray  # direction of increasing row index
    spacing: tuple[float, float]  # (between rows, between columns) in mm
    size: tuple[int, int]  # rows, columns

    @classmethod
    def of(cls, position: Sequence[float], orientation: Sequence[float],
           spacing: Sequence[float] | None, rows: int, columns: int) -> Plane:
        s = (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) >= 2 else (1.0, 1.0)
        return cls(np.asarray(position, float), np.asarray(orientation[:3], float),
                   np.asarray(orientation[3:6], float), s, (rows, columns))

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    def to_patient(self, x: float, y: float) -> np.ndarray:
        return self.origin + x * self.spacing[1] * self.row + y * self.spacing[0] * self.col

    def to_image(self, point: np.ndarray) -> tuple[float, float]:
        d = point - self.origin
        return float(d @ self.row) / self.spacing[1], float(d @ self.col) / self.spacing[0]

    def corners(self) -> list[np.ndarray]:
        rows, cols = self.size
        return [self.to_patient(x, y) for x, y in ((-0.5, -0.5), (cols - 0.5, -0.5),
                                                   (cols - 0.5, rows - 0.5), (-0.5, rows - 0.5))]


def parallel(a: Plane, b: Plane, tolerance: float = 1e-3) -> bool:
    return float(np.linalg.norm(np.cross(a.normal, b.normal))) < tolerance


def slice_distance(plane: Plane, point: np.ndarray) -> float:
    """Signed distance of a point from a plane along its normal (mm)."""
    return float((point - plane.origin) @ plane.normal)


def nearest_slice(target: np.ndarray, normal: np.ndarray, planes: Sequence[Plane],
                  offset: float = 0.0) -> int:
    """The index of the plane whose position along ``normal`` is closest to ``target``'s.

    ``offset`` shifts the target first, for series matched by table position rather than by a
    shared frame of reference (the offset the reader had when synchronising started).
    """
    wanted = float(target @ normal) + offset
    return int(np.argmin([abs(float(p.origin @ normal) - wanted) for p in planes]))


def reference_line(shown: Plane, other: Plane) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Where ``other``'s plane cuts the ``shown`` image, as two image points; None if it does not."""
    if parallel(shown, other):
        return None
    corners = other.corners()
    hits: list[np.ndarray] = []
    for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
        da, db = slice_distance(shown, a), slice_distance(shown, b)
        if da == db:
            continue
        t = da / (da - db)
        if 0.0 <= t <= 1.0:
            hits.append(a + t * (b - a))
    if len(hits) < 2:
        return None
    # The two hits farthest apart span the other slice's extent in this plane.
    ends = max(((p, q) for i, p in enumerate(hits) for q in hits[i + 1:]),
               key=lambda pq: float(np.linalg.norm(pq[0] - pq[1])))
    return _clip(shown.to_image(ends[0]), shown.to_image(ends[1]), shown.size)


def _clip(p: tuple[float, float], q: tuple[float, float],
          size: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The part of segment p–q inside the image (Liang–Barsky), or None."""
    rows, cols = size
    low, high = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for step, room in ((-dx, p[0] + 0.5), (dx, cols - 0.5 - p[0]),
                       (-dy, p[1] + 0.5), (dy, rows - 0.5 - p[1])):
        if step == 0:
            if room < 0:
                return None
            continue
        t = room / step
        if step < 0:
            low = max(low, t)
        else:
            high = min(high, t)
    if low > high:
        return None
    return (p[0] + low * dx, p[1] + low * dy), (p[0] + high * dx, p[1] + high * dy)
