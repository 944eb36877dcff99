"""The shapes of measurements, for drawing, picking and editing them, without a screen.

A measurement is drawn as polylines through its points, picked within a few screen pixels of a
line or a handle, and edited by dragging a handle (an end, a vertex or a box corner) or the whole
shape. Everything here is plain geometry on (x, y) tuples: image coordinates for the shapes, and
whatever coordinates the caller maps them to for picking.
"""

from __future__ import annotations

import math
from itertools import pairwise

from app.imaging.measure import Kind, Point

ELLIPSE_STEPS = 48  # segments of an ellipse's outline


def box_corners(p: Point, q: Point) -> list[Point]:
    """The four corners of the box with opposite corners p and q, in order round the box."""
    return [p, (q[0], p[1]), q, (p[0], q[1])]


def outline(kind: Kind, points: tuple[Point, ...]) -> list[list[Point]]:
    """The polylines a measurement is drawn as (closed outlines repeat their first point)."""
    if kind is Kind.COBB:
        return [list(points[:2]), list(points[2:])]
    if kind is Kind.RECTANGLE:
        corners = box_corners(points[0], points[1])
        return [[*corners, corners[0]]]
    if kind is Kind.ELLIPSE:
        (x0, y0), (x1, y1) = points
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
        return [[(cx + rx * math.cos(t), cy + ry * math.sin(t))
                 for t in (2 * math.pi * i / ELLIPSE_STEPS for i in range(ELLIPSE_STEPS + 1))]]
    if kind is Kind.FREEHAND:
        return [[*points, points[0]]]
    if kind is Kind.TEXT:
        return []
    return [list(points)]


def handles(kind: Kind, points: tuple[Point, ...]) -> list[Point]:
    """Where a selected measurement can be taken hold of to change it: its ends and vertices, a
    box's corners; a freehand outline is moved whole, never point by point."""
    if kind in (Kind.RECTANGLE, Kind.ELLIPSE):
        return box_corners(points[0], points[1])
    if kind is Kind.FREEHAND:
        return []
    return list(points)


def edited(kind: Kind, points: tuple[Point, ...], handle: int, to: Point) -> tuple[Point, ...]:
    """The points after handle number ``handle`` (of :func:`handles`) was dragged to ``to``: a box
    keeps the corner opposite the one dragged."""
    if kind in (Kind.RECTANGLE, Kind.ELLIPSE):
        return box_corners(points[0], points[1])[(handle + 2) % 4], to
    return tuple(to if i == handle else p for i, p in enumerate(points))


def moved(points: tuple[Point, ...], dx: float, dy: float) -> tuple[Point, ...]:
    return tuple((x + dx, y + dy) for x, y in points)


def distance_to_segment(p: Point, a: Point, b: Point) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    length = dx * dx + dy * dy
    t = 0.0 if length == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def distance_to_polyline(p: Point, line: list[Point]) -> float:
    if len(line) == 1:
        return math.hypot(p[0] - line[0][0], p[1] - line[0][1])
    return min((distance_to_segment(p, a, b) for a, b in pairwise(line)), default=math.inf)


def nearest(p: Point, candidates: list[Point], within: float) -> int | None:
    """The index of the candidate closest to ``p`` if it is ``within`` reach, else None."""
    reach = [(math.hypot(p[0] - c[0], p[1] - c[1]), i) for i, c in enumerate(candidates)]
    best = min(reach, default=None)
    return best[1] if best is not None and best[0] <= within else None


def label_anchor(screen_points: list[Point]) -> Point:
    """Where a label hangs from a shape: its lowest-right point on screen."""
    return max(screen_points, key=lambda p: p[0] + p[1])
