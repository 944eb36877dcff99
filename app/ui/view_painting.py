"""What a viewport draws over its frame: corner and edge text, the scale bar, measurements and
reference lines.

Kept apart from :mod:`app.ui.image_view` so the widget decides *what* is shown and this module only
*how*: every mark is drawn in widget coordinates, image points mapped through the frame's transform.
"""

from __future__ import annotations

from itertools import pairwise

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QTransform
from PySide6.QtWidgets import QWidget

from app.imaging.measure import Kind, Point

OVERLAY_COLOUR = QColor(236, 214, 120)
MEASURE_COLOUR = QColor(120, 230, 140)
REFERENCE_COLOUR = QColor(80, 170, 255)
HINT_COLOUR = QColor(110, 114, 120)
SHADOW_COLOUR = QColor(0, 0, 0, 200)  # keeps text legible over bright anatomy
OVERLAY_MARGIN = 6
OVERLAY_PIXEL_SIZE = 12
SCALE_BAR_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500)  # mm


class OverlayPainter:
    """Draws on ``widget`` with ``painter``, in the widget's font at the overlay size; ``transform``
    maps image coordinates to the widget and ``zoom`` is its screen pixels per image row."""

    def __init__(self, painter: QPainter, widget: QWidget, transform: QTransform, zoom: float) -> None:
        self._painter = painter
        self._area = widget.rect()
        self._font = QFont(widget.font())
        self._font.setPixelSize(OVERLAY_PIXEL_SIZE)
        self._transform = transform
        self._zoom = zoom

    def text(self, align: Qt.AlignmentFlag, text: str, colour: QColor, *, shadow: bool = True,
             right_inset: int = 0) -> None:
        """``text`` aligned inside the widget's margins."""
        if not text:
            return
        painter = self._painter
        painter.setFont(self._font)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        area = self._area.adjusted(OVERLAY_MARGIN, OVERLAY_MARGIN, -OVERLAY_MARGIN - right_inset,
                                   -OVERLAY_MARGIN)
        if shadow:
            painter.setPen(SHADOW_COLOUR)
            painter.drawText(area.translated(1, 1), align, text)
        painter.setPen(colour)
        painter.drawText(area, align, text)

    def annotations(self, bottom: tuple[str, str], top: tuple[list[str], list[str]],
                    edges: dict[str, str], mm_per_pixel: float | None) -> None:
        """The corner texts (bottom left and right, top left and right lines), the orientation
        letters at the edges and, when the pixel spacing is known, the scale bar."""
        align = Qt.AlignmentFlag
        self.text(align.AlignBottom | align.AlignLeft, bottom[0], OVERLAY_COLOUR)
        self.text(align.AlignBottom | align.AlignRight, bottom[1], OVERLAY_COLOUR)
        self.text(align.AlignTop | align.AlignLeft, "\n".join(top[0]), OVERLAY_COLOUR)
        self.text(align.AlignTop | align.AlignRight, "\n".join(top[1]), OVERLAY_COLOUR)
        for edge, flag in (("left", align.AlignLeft | align.AlignVCenter),
                           ("right", align.AlignRight | align.AlignVCenter),
                           ("top", align.AlignTop | align.AlignHCenter),
                           ("bottom", align.AlignBottom | align.AlignHCenter)):
            self.text(flag, edges.get(edge, ""), OVERLAY_COLOUR)
        if mm_per_pixel is not None:
            self._scale_bar(mm_per_pixel)

    def _scale_bar(self, mm_per_pixel: float) -> None:
        """A vertical bar of a round length in mm along the right edge, true to the zoom."""
        width, height = self._area.width(), self._area.height()
        fitting = [mm for mm in SCALE_BAR_STEPS if mm / mm_per_pixel <= height / 3]
        if not fitting:
            return
        length = fitting[-1]
        pixels = length / mm_per_pixel
        x = width - OVERLAY_MARGIN - 2
        top = (height - pixels) / 2
        painter = self._painter
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(QPen(OVERLAY_COLOUR, 1))
        painter.drawLine(QPointF(x, top), QPointF(x, top + pixels))
        for tick in range(length + 1) if length <= 10 else range(0, length + 1, length // 10):
            y = top + tick / mm_per_pixel
            painter.drawLine(QPointF(x - (5 if tick in (0, length) else 3), y), QPointF(x, y))
        self.text(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{length} mm\n\n\n",
                  OVERLAY_COLOUR, right_inset=10)

    def reference_lines(self, lines: list[tuple[Point, Point]]) -> None:
        """Dashed lines where other viewports' slices cut this image; switches on antialiasing for
        the measurements drawn after them."""
        painter = self._painter
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(REFERENCE_COLOUR, 1, Qt.PenStyle.DashLine))
        for a, b in lines:
            painter.drawLine(self._to_widget(a), self._to_widget(b))

    def measurement(self, kind: Kind, points: list[Point], text: str) -> None:
        """A measurement's shape through ``points`` (image coordinates) and its label, if any."""
        painter = self._painter
        screen = [self._to_widget(p) for p in points]
        painter.setPen(QPen(MEASURE_COLOUR, 1.5))
        if kind is Kind.ELLIPSE and len(screen) == 2:
            corners = [self._to_widget(p) for p in (points[0], (points[1][0], points[0][1]),
                                                    points[1], (points[0][0], points[1][1]))]
            # The inscribed ellipse of the (possibly rotated) box, drawn in image space.
            painter.save()
            painter.setTransform(self._transform)
            painter.setPen(QPen(MEASURE_COLOUR, 1.5 / max(self._zoom, 1e-6)))
            x0, x1 = sorted((points[0][0], points[1][0]))
            y0, y1 = sorted((points[0][1], points[1][1]))
            painter.drawEllipse(QRectF(x0, y0, x1 - x0, y1 - y0))
            painter.restore()
            anchor = max(corners, key=lambda p: p.x() + p.y())
        elif kind is Kind.TEXT:
            anchor = screen[0]
            painter.drawEllipse(anchor, 2, 2)
        else:
            for a, b in pairwise(screen):
                painter.drawLine(a, b)
            anchor = screen[-1]
        if text:
            painter.setFont(self._font)
            box = QRectF(anchor.x() + 6, anchor.y() + 4, 400, 40)
            painter.setPen(SHADOW_COLOUR)
            painter.drawText(box.translated(1, 1), Qt.AlignmentFlag.AlignLeft, text)
            painter.setPen(MEASURE_COLOUR)
            painter.drawText(box, Qt.AlignmentFlag.AlignLeft, text)

    def _to_widget(self, point: Point) -> QPointF:
        return self._transform.map(QPointF(*point))
