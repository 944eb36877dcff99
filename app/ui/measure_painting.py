"""How measurements look on a viewport: their shapes, the selected one's handles, labels placed
clear of each other and of the annotations, the pixel value probe and the magnifying loupe.

Shapes come from :mod:`app.imaging.shapes` (the same outlines the viewport picks them by) and the
label positions from :mod:`app.imaging.label_layout`; this module only maps them to the widget and
paints them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

from PySide6.QtCore import QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPolygonF, QTransform

from app.imaging.label_layout import Box, place_labels
from app.imaging.measure import Kind, Point
from app.imaging.shapes import handles, outline
from app.ui.view_painting import OUTLINE_COLOUR, OVERLAY_COLOUR, OverlayPainter

MEASURE_COLOUR = QColor(120, 230, 140)
SELECTED_COLOUR = QColor(255, 200, 60)
HANDLE_COLOUR = QColor(255, 110, 220)  # the square handles of the selected measurement
PROBE_COLOUR = QColor(110, 200, 255)
HANDLE_SIZE = 7
ARROW_HEAD = 12.0  # screen pixels
LEADER_BEYOND = 12.0  # a label further than this from its anchor gets a line to it
LOUPE_RADIUS = 80
LOUPE_ZOOM = 2.0
K = TypeVar("K", bound=Hashable)


class MeasurePainter:
    """Paints with ``painter`` through ``transform`` (image to widget), text in ``overlay``'s font."""

    def __init__(self, painter: QPainter, overlay: OverlayPainter, transform: QTransform,
                 area: QRect) -> None:
        self._painter = painter
        self._overlay = overlay
        self._transform = transform
        self._area = area
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)

    def screen(self, point: Point) -> QPointF:
        return self._transform.map(QPointF(*point))

    def shape(self, kind: Kind, points: Sequence[Point], colour: QColor) -> None:
        """A finished measurement's lines (an arrow with its head, a note with a dot)."""
        painter = self._painter
        painter.setPen(QPen(colour, 1.5))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for line in outline(kind, tuple(points)):
            painter.drawPolyline(QPolygonF([self.screen(p) for p in line]))
        if kind is Kind.ARROW:
            self._arrow_head(self.screen(points[0]), self.screen(points[1]), colour)
        elif kind is Kind.TEXT:
            painter.drawEllipse(self.screen(points[0]), 2, 2)

    def draft(self, kind: Kind, points: list[Point]) -> None:
        """A measurement being drawn: its shape once the points make one, else a line through them."""
        if (kind in (Kind.RECTANGLE, Kind.ELLIPSE, Kind.ARROW) and len(points) == 2) \
                or (kind is Kind.COBB and len(points) == 4):
            self.shape(kind, points, MEASURE_COLOUR)
            return
        self._painter.setPen(QPen(MEASURE_COLOUR, 1.5))
        if kind is Kind.COBB:
            for start in range(0, len(points) - 1, 2):
                self._painter.drawLine(self.screen(points[start]), self.screen(points[start + 1]))
        else:
            self._painter.drawPolyline(QPolygonF([self.screen(p) for p in points]))

    def _arrow_head(self, tail: QPointF, head: QPointF, colour: QColor) -> None:
        heading = math.atan2(head.y() - tail.y(), head.x() - tail.x())
        barbs = [QPointF(head.x() - ARROW_HEAD * math.cos(heading + turn),
                         head.y() - ARROW_HEAD * math.sin(heading + turn)) for turn in (0.4, -0.4)]
        self._painter.setBrush(QBrush(colour))
        self._painter.drawPolygon(QPolygonF([head, *barbs]))
        self._painter.setBrush(Qt.BrushStyle.NoBrush)

    def handles(self, kind: Kind, points: Sequence[Point]) -> None:
        """Squares where the selected measurement can be taken hold of."""
        painter = self._painter
        painter.setPen(QPen(OUTLINE_COLOUR, 1))
        half = HANDLE_SIZE // 2
        for point in handles(kind, tuple(points)):
            centre = self.screen(point).toPoint()
            square = QRect(centre.x() - half, centre.y() - half, HANDLE_SIZE, HANDLE_SIZE)
            painter.fillRect(square, HANDLE_COLOUR)
            painter.drawRect(square.adjusted(-1, -1, 0, 0))

    def labels(self, items: list[tuple[K, QPointF, str, QColor]], obstacles: list[QRect]) -> dict[K, QRect]:
        """Each (key, anchor, text, colour) label where it covers no other label and no obstacle
        (when the view has room); returns where each went."""
        sizes = [self._overlay.text_size(text) for _, _, text, _ in items]
        area = Box(self._area.left(), self._area.top(), self._area.width(), self._area.height())
        anchors = [(anchor.x(), anchor.y()) for _, anchor, _, _ in items]
        boxes = place_labels(list(zip(anchors, sizes, strict=True)),
                             [Box(o.left(), o.top(), o.width(), o.height()) for o in obstacles], area)
        placed: dict[K, QRect] = {}
        for (key, anchor, text, colour), box in zip(items, boxes, strict=True):
            rect = QRectF(box.left, box.top, box.width, box.height)
            if _reach(anchor, rect) > LEADER_BEYOND:
                self._painter.setPen(QPen(colour, 1, Qt.PenStyle.DotLine))
                self._painter.drawLine(anchor, _nearest_on(rect, anchor))
            self._overlay.label(rect, text, colour)
            placed[key] = rect.toAlignedRect()
        return placed

    def probe(self, at: QPointF, text: str) -> None:
        """A cross at the probed pixel and its value beside it, kept inside the view."""
        painter = self._painter
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)  # a crisp cross on the pixel
        at = QPointF(at.toPoint())
        for colour, pen in ((OUTLINE_COLOUR, 3), (PROBE_COLOUR, 1)):
            painter.setPen(QPen(colour, pen))
            painter.drawLine(at + QPointF(-8, 0), at + QPointF(8, 0))
            painter.drawLine(at + QPointF(0, -8), at + QPointF(0, 8))
        if text:
            width, height = self._overlay.text_size(text)
            area = Box(self._area.left(), self._area.top(), self._area.width(), self._area.height())
            beside = Box(at.x() + 12, at.y() + 12, width, height).within(area)
            self._overlay.label(QRectF(beside.left, beside.top, width, height), text, PROBE_COLOUR)

    def loupe(self, image: QImage, at: QPointF,
              shapes: Sequence[tuple[Kind, Sequence[Point], QColor]] = ()) -> None:
        """A round loupe centred on ``at`` showing the displayed image there at twice its size, with
        the measurements on it: a calliper end placed under the loupe must be seen where it is."""
        painter = self._painter
        box = QRectF(at.x() - LOUPE_RADIUS, at.y() - LOUPE_RADIUS, 2 * LOUPE_RADIUS, 2 * LOUPE_RADIUS)
        round_ = QPainterPath()
        round_.addEllipse(box)
        painter.save()
        painter.setClipPath(round_)
        painter.fillRect(box, Qt.GlobalColor.black)
        about = QTransform.fromTranslate(-at.x(), -at.y()) * QTransform.fromScale(LOUPE_ZOOM, LOUPE_ZOOM) \
            * QTransform.fromTranslate(at.x(), at.y())
        magnified = self._transform * about
        painter.setTransform(magnified)
        painter.drawImage(QRectF(-0.5, -0.5, image.width(), image.height()), image)
        painter.resetTransform()  # the shapes map their points themselves; the clip stays
        widget, self._transform = self._transform, magnified
        for kind, points, colour in shapes:
            self.shape(kind, points, colour)
        self._transform = widget
        painter.restore()
        painter.setPen(QPen(OVERLAY_COLOUR, 1.5))
        painter.drawEllipse(box)


def _nearest_on(rect: QRectF, point: QPointF) -> QPointF:
    return QPointF(min(max(point.x(), rect.left()), rect.right()),
                   min(max(point.y(), rect.top()), rect.bottom()))


def _reach(point: QPointF, rect: QRectF) -> float:
    nearest = _nearest_on(rect, point)
    return math.hypot(nearest.x() - point.x(), nearest.y() - point.y())
