"""Placing measurement labels so that none covers another or the viewport's own annotations.

A greedy placement: each label, in turn, takes the first of its candidate positions round its
anchor (right below, right above, left below, left above, below, above, stacked outwards; each
moved into the view where it would stick out) that meets neither a label placed before it nor an
obstacle (corner text, orientation letters, scale bar). When nothing is free it takes the candidate
that covers least.
Screen coordinates, no Qt: the viewport maps anchors and sizes in and draws the boxes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.imaging.measure import Point

GAP = 3.0  # kept free between a label and what it must not touch
NEAR = 10.0  # from the anchor to the nearest label position (clear of a handle there)
STACKED = 8  # positions each way, one label height apart


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def overlap(self, other: Box) -> float:
        """The area the two boxes share (0 when they only touch)."""
        wide = min(self.right, other.right) - max(self.left, other.left)
        high = min(self.bottom, other.bottom) - max(self.top, other.top)
        return wide * high if wide > 0 and high > 0 else 0.0

    def intersects(self, other: Box) -> bool:
        return self.overlap(other) > 0

    def grown(self, by: float) -> Box:
        return Box(self.left - by, self.top - by, self.width + 2 * by, self.height + 2 * by)

    def within(self, area: Box) -> Box:
        """This box moved the least it takes to lie inside ``area`` (its left or top edge kept
        inside when it is too big)."""
        return Box(max(area.left, min(self.left, area.right - self.width)),
                   max(area.top, min(self.top, area.bottom - self.height)), self.width, self.height)

    def inside(self, area: Box) -> bool:
        return (self.left >= area.left and self.top >= area.top and self.right <= area.right
                and self.bottom <= area.bottom)


def candidates(anchor: Point, size: tuple[float, float]) -> list[Box]:
    """Where a label of ``size`` (width, height) may go round ``anchor``, best first: beside it to
    the right, to the left, then below and above it, each stacked further out after the first."""
    (x, y), (w, h) = anchor, size
    step = h + 2 * GAP
    boxes = []
    for k in range(STACKED):
        down, up = y + NEAR / 2 + k * step, y - NEAR / 2 - h - k * step
        boxes += [Box(x + NEAR, down, w, h), Box(x + NEAR, up, w, h), Box(x - NEAR - w, down, w, h),
                  Box(x - NEAR - w, up, w, h), Box(x - w / 2, down + NEAR / 2, w, h),
                  Box(x - w / 2, up - NEAR / 2, w, h)]
    return boxes


def place_labels(labels: list[tuple[Point, tuple[float, float]]], obstacles: list[Box],
                 area: Box) -> list[Box]:
    """A box for each (anchor, size) label, in order, clear of the others and the obstacles
    where there is room."""
    taken = [o.grown(GAP) for o in obstacles]
    placed: list[Box] = []
    for anchor, size in labels:
        options = [box.within(area) for box in candidates(anchor, size)]
        free = [b for b in options if b.inside(area) and not any(b.intersects(t) for t in taken)]
        best = free[0] if free else min(
            options, key=lambda b: (not b.inside(area), sum(b.overlap(t) for t in taken)))
        placed.append(best)
        taken.append(best.grown(GAP))
    return placed
