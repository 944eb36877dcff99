"""What a viewport draws over its frame: corner and edge text, the scale bar and reference lines
(measurements are drawn by :mod:`app.ui.measure_painting`, with this module's outlined text).

Kept apart from :mod:`app.ui.image_view` so the widget decides *what* is shown and this module only
*how*: every mark is drawn in widget coordinates, image points mapped through the frame's transform.
Text has a dark outline all round, so it reads on white bone and on inverted images alike; the
annotations are laid out so none covers another: an orientation letter steps inward past corner
text that reaches it, and the scale bar takes the free stretch of the right edge.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QTransform
from PySide6.QtWidgets import QWidget

from app.imaging.measure import Point

OVERLAY_COLOUR = QColor(236, 214, 120)
REFERENCE_COLOUR = QColor(80, 170, 255)
HINT_COLOUR = QColor(110, 114, 120)
PROBLEM_COLOUR = QColor(255, 170, 150)  # why a viewport shows no image
OUTLINE_COLOUR = QColor(0, 0, 0)  # all round the text: legible over bright anatomy and inverted images
OUTLINE_OFFSETS = tuple((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy)
OVERLAY_MARGIN = 6
OVERLAY_PIXEL_SIZE = 12
GAP = 4  # between annotations that would otherwise touch
SCALE_BAR_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500)  # mm
SCALE_TICK = 5
CORNERS = ("top left", "top right", "bottom left", "bottom right")
_ALIGN = Qt.AlignmentFlag
EDGE_ALIGNMENT = {"left": _ALIGN.AlignLeft | _ALIGN.AlignVCenter,
                  "right": _ALIGN.AlignRight | _ALIGN.AlignVCenter,
                  "top": _ALIGN.AlignTop | _ALIGN.AlignHCenter,
                  "bottom": _ALIGN.AlignBottom | _ALIGN.AlignHCenter}


class OverlayPainter:
    """Draws on ``widget`` with ``painter``, in the widget's font at the overlay size; ``transform``
    maps image coordinates to the widget and ``zoom`` is its screen pixels per image row.

    ``boxes`` holds where :meth:`annotations` put each of its parts (widget coordinates, outline
    included): the four corners, the four edge letters, "scale bar" and "scale label".
    """

    def __init__(self, painter: QPainter, widget: QWidget, transform: QTransform, zoom: float) -> None:
        self._painter = painter
        self._area = widget.rect()
        self._font = QFont(widget.font())
        self._font.setPixelSize(OVERLAY_PIXEL_SIZE)
        self._transform = transform
        self._zoom = zoom
        self.boxes: dict[str, QRect] = {}

    def text(self, align: Qt.AlignmentFlag, text: str, colour: QColor, *, shadow: bool = True) -> QRect:
        """``text`` aligned inside the widget's margins, outlined unless ``shadow`` is False (hints on
        the empty black view); returns the box it covers (empty without text)."""
        if not text:
            return QRect()
        self._painter.setFont(self._font)
        area = self._area.adjusted(OVERLAY_MARGIN, OVERLAY_MARGIN, -OVERLAY_MARGIN, -OVERLAY_MARGIN)
        box = self._painter.boundingRect(area, align, text)
        return self._draw_text(box, align, text, colour, outline=shadow)

    def empty(self, problem: str) -> None:
        """An empty view: why its series cannot be shown, else the dim "No series" hint."""
        if not problem:
            self.text(_ALIGN.AlignCenter, "No series", HINT_COLOUR, shadow=False)
            return
        self._painter.setPen(PROBLEM_COLOUR)
        self._painter.drawText(self._area.adjusted(16, 16, -16, -16),
                               _ALIGN.AlignCenter | Qt.TextFlag.TextWordWrap, problem)

    def _draw_text(self, box: QRect | QRectF, align: Qt.AlignmentFlag, text: str, colour: QColor, *,
                   outline: bool = True) -> QRect:
        painter = self._painter
        painter.setFont(self._font)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        if outline:
            painter.setPen(OUTLINE_COLOUR)
            for dx, dy in OUTLINE_OFFSETS:
                painter.drawText(box.translated(dx, dy), align, text)
        painter.setPen(colour)
        painter.drawText(box, align, text)
        drawn = box.toAlignedRect() if isinstance(box, QRectF) else QRect(box)
        return drawn.adjusted(-1, -1, 1, 1) if outline else drawn

    def annotations(self, bottom: tuple[str, str], top: tuple[list[str], list[str]],
                    edges: dict[str, str], mm_per_pixel: float | None) -> None:
        """The corner texts (bottom left and right, top left and right lines), the orientation
        letters at the edges and, when the pixel spacing is known and there is room, the scale bar."""
        self._corners(dict(zip(CORNERS, ("\n".join(top[0]), "\n".join(top[1]), bottom[0], bottom[1]),
                               strict=True)))
        area = self._area.adjusted(OVERLAY_MARGIN, OVERLAY_MARGIN, -OVERLAY_MARGIN, -OVERLAY_MARGIN)
        for edge, flags in EDGE_ALIGNMENT.items():
            letters = edges.get(edge, "")
            if letters:
                box = _clear_of(self._painter.boundingRect(area, flags, letters).adjusted(-1, -1, 1, 1),
                                edge, [self.boxes[c] for c in CORNERS if c in self.boxes])
                self.boxes[edge] = self._draw_text(box.adjusted(1, 1, -1, -1), _ALIGN.AlignCenter,
                                                   letters, OVERLAY_COLOUR)
        if mm_per_pixel is not None:
            self._scale_bar(mm_per_pixel)

    def _corners(self, texts: dict[str, str]) -> None:
        """The corner texts; in a narrow view a right-hand corner that would meet its left-hand
        neighbour moves past it, towards the middle (below the top left, above the bottom left)."""
        self._painter.setFont(self._font)
        area = self._area.adjusted(OVERLAY_MARGIN, OVERLAY_MARGIN, -OVERLAY_MARGIN, -OVERLAY_MARGIN)
        placed: dict[str, tuple[QRect, Qt.AlignmentFlag]] = {}
        for corner, text in texts.items():
            if text:
                flags = (_ALIGN.AlignTop if corner.startswith("top") else _ALIGN.AlignBottom) \
                    | (_ALIGN.AlignLeft if corner.endswith("left") else _ALIGN.AlignRight)
                placed[corner] = (self._painter.boundingRect(area, flags, text).adjusted(-1, -1, 1, 1), flags)
        for left, right in (("top left", "top right"), ("bottom left", "bottom right")):
            if left in placed and right in placed and placed[left][0].intersects(placed[right][0]):
                (beside, _), (box, flags) = placed[left], placed[right]
                shift = (beside.bottom() + GAP - box.top() if left == "top left"
                         else beside.top() - GAP - box.bottom())
                placed[right] = (box.translated(0, shift), flags)
        for corner, (box, flags) in placed.items():
            self.boxes[corner] = self._draw_text(box.adjusted(1, 1, -1, -1), flags, texts[corner],
                                                 OVERLAY_COLOUR)

    def _scale_bar(self, mm_per_pixel: float) -> None:
        """A vertical bar of a round length in mm along the right edge, true to the zoom, in the
        longest free stretch of that edge; left out when no round length fits there."""
        label_width = self._painter.fontMetrics().horizontalAdvance("500 mm") + 2
        label_height = self._painter.fontMetrics().height() + 2
        x = self._area.width() - OVERLAY_MARGIN - 2
        column = QRect(x - SCALE_TICK - GAP - label_width, 0, SCALE_TICK + GAP + label_width + 3,
                       self._area.height())
        top, bottom = _free_stretch(column, [b for b in self.boxes.values() if b.intersects(column)],
                                    OVERLAY_MARGIN)
        room = min(bottom - top - 2, self._area.height() / 3)
        fitting = [mm for mm in SCALE_BAR_STEPS if mm / mm_per_pixel <= room]
        if not fitting or bottom - top < label_height:
            return
        length = fitting[-1]
        pixels = length / mm_per_pixel
        start = (top + bottom - pixels) / 2
        painter = self._painter
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        ticks = range(length + 1) if length <= 10 else range(0, length + 1, length // 10)
        for colour, width in ((OUTLINE_COLOUR, 3), (OVERLAY_COLOUR, 1)):  # the bar outlined as the text
            painter.setPen(QPen(colour, width))
            painter.drawLine(QPointF(x, start), QPointF(x, start + pixels))
            for tick in ticks:
                y = start + tick / mm_per_pixel
                painter.drawLine(QPointF(x - (SCALE_TICK if tick in (0, length) else 3), y), QPointF(x, y))
        self.boxes["scale bar"] = QRectF(x - SCALE_TICK - 1.5, start - 1.5, SCALE_TICK + 3,
                                         pixels + 3).toAlignedRect()
        middle = min(max(start + pixels / 2 - label_height / 2, top), bottom - label_height)
        label = QRectF(x - SCALE_TICK - GAP - label_width, middle, label_width, label_height)
        self.boxes["scale label"] = self._draw_text(label.adjusted(1, 1, -1, -1), _ALIGN.AlignRight
                                                    | _ALIGN.AlignVCenter, f"{length} mm", OVERLAY_COLOUR)

    def reference_lines(self, lines: list[tuple[Point, Point]]) -> None:
        """Dashed lines where other viewports' slices cut this image."""
        painter = self._painter
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(REFERENCE_COLOUR, 1, Qt.PenStyle.DashLine))
        for a, b in lines:
            painter.drawLine(self._to_widget(a), self._to_widget(b))

    def text_size(self, text: str) -> tuple[float, float]:
        """The width and height ``text`` takes in the overlay font, outline included."""
        self._painter.setFont(self._font)
        box = self._painter.boundingRect(QRect(0, 0, 2000, 2000), _ALIGN.AlignLeft, text)
        return box.width() + 2.0, box.height() + 2.0

    def label(self, box: QRectF, text: str, colour: QColor) -> None:
        """Outlined ``text`` in ``box`` (as :meth:`text_size` measured it)."""
        self._draw_text(box.adjusted(1, 1, -1, -1), _ALIGN.AlignLeft, text, colour)

    def _to_widget(self, point: Point) -> QPointF:
        return self._transform.map(QPointF(*point))


def _clear_of(box: QRect, edge: str, corners: list[QRect]) -> QRect:
    """``box`` (an edge letter's) moved inward, away from ``edge``, past the corner texts it meets
    (again past any it meets there: in a narrow view the corners stack)."""
    for _ in corners:
        hit = [c for c in corners if c.intersects(box)]
        if not hit:
            break
        if edge == "top":
            box = box.translated(0, max(c.bottom() for c in hit) + GAP - box.top())
        elif edge == "bottom":
            box = box.translated(0, min(c.top() for c in hit) - GAP - box.bottom())
        elif edge == "left":
            box = box.translated(max(c.right() for c in hit) + GAP - box.left(), 0)
        else:
            box = box.translated(min(c.left() for c in hit) - GAP - box.right(), 0)
    return box


def _free_stretch(column: QRect, taken: list[QRect], margin: int) -> tuple[float, float]:
    """The longest stretch (top, bottom) of ``column``, inside its margins, that none of the
    ``taken`` boxes covers (keeping a gap to them)."""
    gaps: list[tuple[float, float]] = []
    reach = column.top() + margin - GAP  # the lowest edge taken so far
    for box in sorted(taken, key=QRect.top):
        gaps.append((reach + GAP, box.top() - GAP))
        reach = max(reach, box.bottom())
    gaps.append((reach + GAP, column.bottom() - margin))
    return max(gaps, key=lambda gap: gap[1] - gap[0])
