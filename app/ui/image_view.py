"""A 2D viewport: one frame of a series, windowed by the core, drawn pixel for pixel.

The core turns stored values into 8-bit display values (rescale, LUTs, window, inversion,
overlays) and measures (:mod:`app.imaging.measure`). This widget only places them on the screen
(zoom, pan, rotation, flips with nearest-neighbour sampling, so the grey levels a reader sees are
exactly the ones the core computed), draws corner text, orientation letters, a scale bar and
measurements, and turns the mouse and keys into requests.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import partial
from itertools import pairwise
from typing import cast

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFocusEvent,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QInputDialog, QWidget

from app.errors import CustodianError
from app.imaging.display import CT_PRESETS, Window
from app.imaging.geometry import edge_letters
from app.imaging.measure import POINTS, Kind, Measurement, Point, label, modality_unit
from app.imaging.series import SeriesImages


class Tool(StrEnum):
    WINDOW = "window"
    PAN = "pan"
    ZOOM = "zoom"
    DISTANCE = "distance"
    ANGLE = "angle"
    ELLIPSE = "ellipse"
    TEXT = "text"


MEASURING = {Tool.DISTANCE: Kind.DISTANCE, Tool.ANGLE: Kind.ANGLE, Tool.ELLIPSE: Kind.ELLIPSE,
             Tool.TEXT: Kind.TEXT}
TOOL_KEYS = {Qt.Key.Key_Escape: Tool.WINDOW, Qt.Key.Key_P: Tool.PAN, Qt.Key.Key_Z: Tool.ZOOM,
             Qt.Key.Key_D: Tool.DISTANCE, Qt.Key.Key_A: Tool.ANGLE, Qt.Key.Key_E: Tool.ELLIPSE,
             Qt.Key.Key_T: Tool.TEXT}
PRESET_KEYS = [Qt.Key.Key_F2, Qt.Key.Key_F3, Qt.Key.Key_F4, Qt.Key.Key_F5, Qt.Key.Key_F6,
               Qt.Key.Key_F7, Qt.Key.Key_F8, Qt.Key.Key_F9]

CONTROLS_HELP = (
    "Mouse wheel, ↑/↓: previous / next image",
    "Page Up / Page Down: jump a tenth of the series; Home / End: first / last image",
    "Left-drag: the current tool (window by default); middle-drag: pan; right-drag: zoom",
    "Esc: window tool (and cancel a measurement)   P: pan   Z: zoom",
    "D: distance   A: angle (three clicks)   E: ellipse ROI   T: text note",
    "Delete: remove the last measurement on this image",
    "R: reset the window   N: next stored window   "
    + "   ".join(f"F{i + 2}: {name}" for i, name in enumerate(CT_PRESETS)) + " (CT)",
    "I: invert   O: overlays on/off   F: fit   1: one image pixel per screen pixel",
    "[ / ]: rotate left / right   H: flip horizontally   V: flip vertically   Ctrl+R: reset view",
    "C: cine on/off   + / -: cine faster / slower   Ctrl+H: hide / show the text and markers",
)

OVERLAY_COLOUR = QColor(236, 214, 120)
MEASURE_COLOUR = QColor(120, 230, 140)
REFERENCE_COLOUR = QColor(80, 170, 255)
HINT_COLOUR = QColor(110, 114, 120)
OVERLAY_MARGIN = 6
OVERLAY_PIXEL_SIZE = 12
WHEEL_NOTCH = 120  # angleDelta units of one wheel click
DRAG_PIXELS_PER_WIDTH = 250.0  # dragging this far changes the window by one default width
ZOOM_DRAG_PIXELS = 200.0  # dragging this far up doubles the zoom
ZOOM_LIMITS = (0.05, 64.0)
CINE_FPS = 10.0
CINE_LIMITS = (1.0, 60.0)
SCALE_BAR_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500)  # mm


def qimage(pixels: np.ndarray) -> QImage:
    """Contiguous display-ready 8-bit grey (rows, cols) or RGB (rows, cols, 3) pixels as a QImage
    over the same buffer (no copy: the caller keeps ``pixels`` alive while the image is used)."""
    rows, cols = pixels.shape[:2]
    fmt = QImage.Format.Format_Grayscale8 if pixels.ndim == 2 else QImage.Format.Format_RGB888
    return QImage(pixels.data, cols, rows, pixels.strides[0], fmt)


def _level_text(value: float) -> str:
    """Window numbers as readers quote them: whole numbers, decimals only for small ranges."""
    return f"{value:.0f}" if abs(value) >= 100 or value == round(value) else f"{value:.3g}"


class ImageView(QWidget):
    """Shows frame ``index`` of a :class:`SeriesImages` with window ``window``."""

    indexChanged = Signal(int)
    windowChanged = Signal(object)  # Window | None
    failed = Signal(str)  # a CustodianError's plain message; the view is then empty
    activated = Signal()  # took the focus: the reader is working in this view
    measured = Signal(object)  # a finished Measurement (to be saved)
    measurementRemoved = Signal(object)  # a Measurement the reader deleted

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._series: SeriesImages | None = None
        self._index = 0
        self._window: Window | None = None
        self._default_width = 1.0
        self._window_chosen = False  # the reader set the window: keep it across slices
        self._stored_choice = 0
        self._invert = False
        self._show_overlays = True
        self._pixels: np.ndarray | None = None  # the buffer self._image points into
        self._image: QImage | None = None
        self._pixel_aspect = 1.0  # displayed width of a pixel relative to its height
        self._zoom: float | None = None  # screen pixels per image row; None: fit the widget
        self._pan = QPointF()
        self._rotation = 0  # clockwise degrees
        self._flip_h = self._flip_v = False
        self._tool = Tool.WINDOW
        # the button, where the drag began, and the window, pan or zoom it started from
        self._drag: tuple[Qt.MouseButton, QPoint, Window | QPointF | float] | None = None
        self._draft: list[Point] = []  # points of the measurement being drawn
        self._hover: Point | None = None
        self._measurements: list[Measurement] = []
        self._reference_lines: list[tuple[Point, Point]] = []
        self._corners: tuple[list[str], list[str]] = ([], [])
        self._annotations = True  # corner text, orientation letters, scale bar
        self._wheel_rest = 0
        self._cine = QTimer(self)
        self._cine.timeout.connect(self._cine_step)
        self._cine_fps = CINE_FPS
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMouseTracking(True)
        self.setMinimumSize(96, 96)
        self.setToolTip("\n".join(CONTROLS_HELP))

    # ------------------------------------------------------------------ public API
    @property
    def series(self) -> SeriesImages | None:
        return self._series

    @property
    def index(self) -> int:
        return self._index

    @property
    def window(self) -> Window | None:  # type: ignore[override]  # the VOI window, not QWidget.window()
        """The VOI window in use; None for colour images and when nothing is shown."""
        return self._window

    @property
    def chosen_window(self) -> Window | None:
        """The window the reader set (kept across slices); None while the series default applies."""
        return self._window if self._window_chosen else None

    @property
    def tool(self) -> Tool:
        return self._tool

    @property
    def zoom(self) -> float:
        """Screen pixels per image row in use (the fitted scale unless the reader zoomed)."""
        return self._zoom if self._zoom is not None else self._fit_scale()

    @property
    def cine_running(self) -> bool:
        return self._cine.isActive()

    @property
    def cine_fps(self) -> float:
        return self._cine_fps

    @property
    def measurements(self) -> list[Measurement]:
        return list(self._measurements)

    def set_series(self, series: SeriesImages | None,
                   measurements: list[Measurement] | None = None) -> None:
        self._series = series if series is not None and len(series) else None
        self._index = 0
        self._window_chosen = False
        self._stored_choice = 0
        self._window = None
        self._drag = None
        self._draft = []
        self._measurements = list(measurements or [])
        self._reference_lines = []
        self._cine.stop()
        self.reset_view()
        self._refresh()
        self.indexChanged.emit(self._index)
        self.windowChanged.emit(self._window)

    def set_index(self, index: int) -> None:
        if self._series is None:
            return
        index = max(0, min(index, len(self._series) - 1))
        if index == self._index:
            return
        before = self._window
        self._index = index
        self._draft = []
        self._refresh()
        self.indexChanged.emit(self._index)
        if self._window != before:
            self.windowChanged.emit(self._window)

    def set_window(self, window: Window) -> None:
        if self._series is None or window == self._window:
            return
        self._window = window
        self._window_chosen = True
        self._refresh()
        self.windowChanged.emit(self._window)

    def reset_window(self) -> None:
        """Back to what the series says (its stored window or LUT, else the frame's value range)."""
        if self._series is None:
            return
        before = self._window
        self._window_chosen = False
        self._stored_choice = 0
        self._refresh()
        if self._window != before:
            self.windowChanged.emit(self._window)

    def next_stored_window(self) -> None:
        """Step through the windows the modality stored (e.g. an MR's "brain" and "soft")."""
        if self._series is None:
            return
        stored = self._series.windows(self._index)
        if len(stored) > 1:
            self._stored_choice = (self._stored_choice + 1) % len(stored)
            self.set_window(stored[self._stored_choice])

    def apply_preset(self, name: str) -> None:
        self.set_window(CT_PRESETS[name])

    def set_invert(self, on: bool) -> None:
        self._invert = on
        self._refresh()

    def set_overlays_shown(self, on: bool) -> None:
        self._show_overlays = on
        self._refresh()

    def set_tool(self, tool: Tool) -> None:
        self._tool = tool
        self._draft = []
        if tool is Tool.WINDOW:
            self.unsetCursor()
        else:
            self.setCursor(Qt.CursorShape.CrossCursor)
        self.update()

    def set_zoom(self, zoom: float | None) -> None:
        """Screen pixels per image row; None fits the image to the widget (and centres it)."""
        if zoom is None:
            self._zoom, self._pan = None, QPointF()
        else:
            self._zoom = min(max(zoom, ZOOM_LIMITS[0]), ZOOM_LIMITS[1])
        self.update()

    def actual_pixels(self) -> None:
        """One image pixel per screen pixel (along rows)."""
        self.set_zoom(1.0)

    def rotate(self, degrees: int) -> None:
        self._rotation = (self._rotation + degrees) % 360
        self.update()

    def flip(self, horizontal: bool) -> None:
        if horizontal:
            self._flip_h = not self._flip_h
        else:
            self._flip_v = not self._flip_v
        self.update()

    def reset_view(self) -> None:
        self._zoom, self._pan, self._rotation = None, QPointF(), 0
        self._flip_h = self._flip_v = self._invert = False
        self.update()

    def set_cine(self, on: bool, fps: float | None = None) -> None:
        if fps is not None:
            self._cine_fps = min(max(fps, CINE_LIMITS[0]), CINE_LIMITS[1])
        if on and self._series is not None and len(self._series) > 1:
            self._cine.start(round(1000 / self._cine_fps))
        else:
            self._cine.stop()
        self.update()

    def add_measurement(self, measurement: Measurement) -> None:
        """Show a measurement (e.g. one the vault saved); replaces the unsaved one it came from."""
        self._measurements = [m for m in self._measurements
                              if not (m.id is None and m.points == measurement.points
                                      and m.sop_uid == measurement.sop_uid)]
        self._measurements.append(measurement)
        self.update()

    def set_reference_lines(self, lines: list[tuple[Point, Point]]) -> None:
        """Where other viewports' slices cut this image (image coordinates)."""
        self._reference_lines = lines
        self.update()

    def set_annotations(self, on: bool) -> None:
        """Show or hide the text, orientation letters and scale bar (measurements stay)."""
        self._annotations = on
        self.update()

    def set_corner_text(self, top_left: list[str], top_right: list[str]) -> None:
        """Patient and study lines; the caller passes only what the role may see."""
        self._corners = (top_left, top_right)
        self.update()

    def image_rect(self) -> QRect:
        """Where the frame is drawn on the widget (its bounding box when rotated)."""
        if self._pixels is None:
            return QRect()
        rows, cols = self._pixels.shape[:2]
        return self._transform().mapRect(QRectF(-0.5, -0.5, cols, rows)).toAlignedRect()

    def to_image(self, point: QPointF | QPoint) -> Point:
        """Image coordinates (x column, y row) of a widget position."""
        inverse, _ = self._transform().inverted()
        mapped = inverse.map(QPointF(point))
        return mapped.x(), mapped.y()

    def to_widget(self, point: Point) -> QPointF:
        return self._transform().map(QPointF(*point))

    def overlay_text(self) -> tuple[str, str]:
        """The bottom-left and bottom-right corner texts (nothing that identifies the patient)."""
        if self._series is None:
            return "", ""
        position = f"Im {self._index + 1}/{len(self._series)}"
        if self._cine.isActive():
            position += f"  Cine {self._cine_fps:.0f} fps"
        if self._window is None:
            return position, ""
        if not self._window_chosen and self._series.uses_voi_lut(self._index):
            return position, "VOI LUT"
        return position, f"W:{_level_text(self._window.width)} L:{_level_text(self._window.center)}"

    def edge_text(self) -> dict[str, str]:
        """The patient directions at the four edges of the view ({} without orientation)."""
        if self._series is None:
            return {}
        orientation = self._series.info(self._index).orientation
        if not orientation or len(orientation) != 6:
            return {}
        return edge_letters(orientation, self._rotation, self._flip_h, self._flip_v)

    def measurement_labels(self) -> list[str]:
        """The labels of the measurements on the shown frame, in the order they were made."""
        return [self._label(m) for m in self._on_frame()]

    # ------------------------------------------------------------------ geometry
    def _fit_scale(self) -> float:
        if self._pixels is None:
            return 1.0
        rows, cols = self._pixels.shape[:2]
        wide = cols * self._pixel_aspect
        if self._rotation % 180:
            wide, rows = rows, wide
        return min(self.width() / wide, self.height() / rows)

    def _transform(self) -> QTransform:
        """Image coordinates (pixel centres at whole numbers) to widget coordinates."""
        if self._pixels is None:
            return QTransform()
        rows, cols = self._pixels.shape[:2]
        scale = self.zoom
        t = QTransform()
        t.translate(self.width() / 2 + self._pan.x(), self.height() / 2 + self._pan.y())
        t.scale(-1 if self._flip_h else 1, -1 if self._flip_v else 1)
        t.rotate(self._rotation)
        t.scale(scale * self._pixel_aspect, scale)
        t.translate(-cols / 2 + 0.5, -rows / 2 + 0.5)
        # Whole-pixel placement: every screen pixel then samples exactly one image pixel.
        box = t.mapRect(QRectF(-0.5, -0.5, cols, rows))
        return t * QTransform.fromTranslate(round(box.left()) - box.left(), round(box.top()) - box.top())

    def _mm_per_screen_pixel(self) -> float | None:
        if self._series is None:
            return None
        spacing = self._series.info(self._index).pixel_spacing
        if not spacing or len(spacing) < 2 or spacing[0] <= 0:
            return None
        return spacing[0] / self.zoom

    # ------------------------------------------------------------------ rendering
    def _refresh(self) -> None:
        """Ask the core for the display pixels of the current frame and wrap them in a QImage."""
        series = self._series
        if series is None:
            self._pixels = self._image = None
            self._window = None
            self.update()
            return
        try:
            info = series.info(self._index)
            if series.is_colour(self._index):
                self._window = None
            else:
                default = series.default_window(self._index)
                self._default_width = default.width
                if not self._window_chosen:
                    self._window = default
            chosen = self._window if self._window_chosen else None
            pixels = np.ascontiguousarray(series.render(self._index, chosen, invert=self._invert,
                                                        overlays=self._show_overlays))
        except CustodianError as exc:
            self._series = None
            self._pixels = self._image = None
            self._window = None
            self._cine.stop()
            self.update()
            self.failed.emit(str(exc))
            return
        # QImage does not copy: self._pixels keeps the buffer alive as long as the image.
        self._pixels = pixels
        self._image = qimage(pixels)
        spacing = info.pixel_spacing
        self._pixel_aspect = (spacing[1] / spacing[0]
                              if spacing and len(spacing) >= 2 and spacing[0] > 0 and spacing[1] > 0
                              else 1.0)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        if self._image is None or self._pixels is None:  # (set and cleared together)
            self._draw_text(painter, Qt.AlignmentFlag.AlignCenter, "No series", HINT_COLOUR, shadow=False)
            return
        rows, cols = self._pixels.shape[:2]
        # Nearest-neighbour: at an integer zoom every screen pixel is exactly a rendered value.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.setTransform(self._transform())
        painter.drawImage(QRectF(-0.5, -0.5, cols, rows), self._image)
        painter.resetTransform()
        self._draw_graphics(painter)
        if self._annotations:
            self._draw_annotations(painter)

    def _draw_annotations(self, painter: QPainter) -> None:
        left, right = self.overlay_text()
        align = Qt.AlignmentFlag
        self._draw_text(painter, align.AlignBottom | align.AlignLeft, left, OVERLAY_COLOUR)
        self._draw_text(painter, align.AlignBottom | align.AlignRight, right, OVERLAY_COLOUR)
        self._draw_text(painter, align.AlignTop | align.AlignLeft, "\n".join(self._corners[0]),
                        OVERLAY_COLOUR)
        self._draw_text(painter, align.AlignTop | align.AlignRight, "\n".join(self._corners[1]),
                        OVERLAY_COLOUR)
        edges = self.edge_text()
        for edge, flag in (("left", align.AlignLeft | align.AlignVCenter),
                           ("right", align.AlignRight | align.AlignVCenter),
                           ("top", align.AlignTop | align.AlignHCenter),
                           ("bottom", align.AlignBottom | align.AlignHCenter)):
            self._draw_text(painter, flag, edges.get(edge, ""), OVERLAY_COLOUR)
        self._draw_scale_bar(painter)

    def _on_frame(self) -> list[Measurement]:
        if self._series is None:
            return []
        sop_uid, frame = self._series.frame_of(self._index)
        return [m for m in self._measurements if m.sop_uid == sop_uid and m.frame == frame]

    def _label(self, m: Measurement) -> str:
        assert self._series is not None
        values = self._series.values(self._index) if m.kind is Kind.ELLIPSE else None
        return label(m, values, self._series.info(self._index).pixel_spacing,
                     modality_unit(self._series.modality))

    def _draw_graphics(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(REFERENCE_COLOUR, 1, Qt.PenStyle.DashLine))
        for a, b in self._reference_lines:
            painter.drawLine(self.to_widget(a), self.to_widget(b))
        for m in self._on_frame():
            self._draw_measurement(painter, m.kind, list(m.points), self._label(m))
        if self._draft and self._tool in MEASURING:
            points = self._draft + ([self._hover] if self._hover else [])
            kind = MEASURING[self._tool]
            if len(points) == POINTS[kind] or kind is Kind.ANGLE:
                self._draw_measurement(painter, kind, points, "")

    def _draw_measurement(self, painter: QPainter, kind: Kind, points: list[Point], text: str) -> None:
        screen = [self.to_widget(p) for p in points]
        painter.setPen(QPen(MEASURE_COLOUR, 1.5))
        if kind is Kind.ELLIPSE and len(screen) == 2:
            corners = [self.to_widget(p) for p in (points[0], (points[1][0], points[0][1]),
                                                   points[1], (points[0][0], points[1][1]))]
            # The inscribed ellipse of the (possibly rotated) box, drawn in image space.
            painter.save()
            painter.setTransform(self._transform())
            painter.setPen(QPen(MEASURE_COLOUR, 1.5 / max(self.zoom, 1e-6)))
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
            font = QFont(self.font())
            font.setPixelSize(OVERLAY_PIXEL_SIZE)
            painter.setFont(font)
            box = QRectF(anchor.x() + 6, anchor.y() + 4, 400, 40)
            painter.setPen(QColor(0, 0, 0, 200))
            painter.drawText(box.translated(1, 1), Qt.AlignmentFlag.AlignLeft, text)
            painter.setPen(MEASURE_COLOUR)
            painter.drawText(box, Qt.AlignmentFlag.AlignLeft, text)

    def _draw_scale_bar(self, painter: QPainter) -> None:
        """A vertical bar of a round length in mm along the right edge, true to the zoom."""
        mm_per_pixel = self._mm_per_screen_pixel()
        if mm_per_pixel is None:
            return
        room = self.height() / 3
        fitting = [mm for mm in SCALE_BAR_STEPS if mm / mm_per_pixel <= room]
        if not fitting:
            return
        length = fitting[-1]
        pixels = length / mm_per_pixel
        x = self.width() - OVERLAY_MARGIN - 2
        top = (self.height() - pixels) / 2
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(QPen(OVERLAY_COLOUR, 1))
        painter.drawLine(QPointF(x, top), QPointF(x, top + pixels))
        for tick in range(length + 1) if length <= 10 else range(0, length + 1, length // 10):
            y = top + tick / mm_per_pixel
            painter.drawLine(QPointF(x - (5 if tick in (0, length) else 3), y), QPointF(x, y))
        self._draw_text(painter, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                        f"{length} mm\n\n\n", OVERLAY_COLOUR, right_inset=10)

    def _draw_text(self, painter: QPainter, align: Qt.AlignmentFlag, text: str, colour: QColor,
                   *, shadow: bool = True, right_inset: int = 0) -> None:
        if not text:
            return
        font = QFont(self.font())
        font.setPixelSize(OVERLAY_PIXEL_SIZE)
        painter.setFont(font)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        area = self.rect().adjusted(OVERLAY_MARGIN, OVERLAY_MARGIN, -OVERLAY_MARGIN - right_inset,
                                    -OVERLAY_MARGIN)
        if shadow:  # keeps the text legible over bright anatomy
            painter.setPen(QColor(0, 0, 0, 200))
            painter.drawText(area.translated(1, 1), align, text)
        painter.setPen(colour)
        painter.drawText(area, align, text)

    def sizeHint(self) -> QSize:
        return QSize(512, 512)

    # ------------------------------------------------------------------ interaction
    def _cine_step(self) -> None:
        if self._series is None:
            self._cine.stop()
            return
        self.set_index((self._index + 1) % len(self._series))

    def wheelEvent(self, event: QWheelEvent) -> None:
        # Accumulate so high-resolution wheels and touchpads step once per notch's worth.
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / WHEEL_NOTCH)
        if steps:
            self._wheel_rest -= steps * WHEEL_NOTCH
            self.set_index(self._index - steps)  # wheel towards the reader: further into the stack
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button, pos = event.button(), event.position().toPoint()
        if self._pixels is None:
            super().mousePressEvent(event)
            return
        if button == Qt.MouseButton.LeftButton and self._tool in MEASURING:
            self._place_point(self.to_image(event.position()))
        elif button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton
                                                       and self._tool is Tool.PAN):
            self._drag = (button, pos, QPointF(self._pan))
        elif button == Qt.MouseButton.RightButton or (button == Qt.MouseButton.LeftButton
                                                      and self._tool is Tool.ZOOM):
            self._drag = (button, pos, self.zoom)
        elif button == Qt.MouseButton.LeftButton and self._window is not None:
            self._drag = (button, pos, self._window)
            self.setCursor(Qt.CursorShape.SizeAllCursor)
        else:
            super().mousePressEvent(event)
            return
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._draft:
            self._hover = self.to_image(event.position())
            self.update()
        if self._drag is None:
            super().mouseMoveEvent(event)
            return
        _, origin, start = self._drag
        delta = event.position().toPoint() - origin
        if isinstance(start, Window):
            unit = self._default_width / DRAG_PIXELS_PER_WIDTH
            self.set_window(Window(start.center + delta.y() * unit,
                                   max(1.0, start.width + delta.x() * unit)))
        elif isinstance(start, QPointF):
            self._pan = start + QPointF(delta)
            self.update()
        else:
            self.set_zoom(float(start) * 2 ** (-delta.y() / ZOOM_DRAG_PIXELS))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._tool in (Tool.DISTANCE, Tool.ELLIPSE) and len(self._draft) == 1 \
                and event.button() == Qt.MouseButton.LeftButton:
            end = self.to_image(event.position())
            if end != self._draft[0]:  # press-drag-release draws it; click-click works too
                self._place_point(end)
            event.accept()
            return
        if self._drag is not None and event.button() == self._drag[0]:
            self._drag = None
            if self._tool is Tool.WINDOW:
                self.unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def _place_point(self, point: Point) -> None:
        assert self._series is not None
        kind = MEASURING[self._tool]
        self._draft.append(point)
        if len(self._draft) < POINTS[kind]:
            self.update()
            return
        points, self._draft, self._hover = tuple(self._draft), [], None
        text = ""
        if kind is Kind.TEXT:
            text = self.ask_text()
            if not text:
                self.update()
                return
        sop_uid, frame = self._series.frame_of(self._index)
        measurement = Measurement(kind, sop_uid, frame, points, text)
        self._measurements.append(measurement)
        self.update()
        self.measured.emit(measurement)

    def ask_text(self) -> str:
        """The words of a text note (a dialog; tests replace it)."""
        text, ok = QInputDialog.getText(self, "Text note", "Note on this image:")
        return text.strip() if ok else ""

    def remove_last_measurement(self) -> None:
        on_frame = self._on_frame()
        if not on_frame:
            return
        last = on_frame[-1]
        self._measurements.remove(last)
        self.update()
        self.measurementRemoved.emit(last)

    def _key_action(self, event: QKeyEvent) -> Callable[[], object] | None:
        """What a key does in this view, or None when it is not one of the view's keys."""
        if self._series is None:
            return None
        key, mods = Qt.Key(event.key()), event.modifiers()
        plain = mods in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.KeypadModifier)
        page = max(1, len(self._series) // 10)
        moves = {
            Qt.Key.Key_Up: self._index - 1,
            Qt.Key.Key_Down: self._index + 1,
            Qt.Key.Key_PageUp: self._index - page,
            Qt.Key.Key_PageDown: self._index + page,
            Qt.Key.Key_Home: 0,
            Qt.Key.Key_End: len(self._series) - 1,
        }
        actions = {
            Qt.Key.Key_R: self.reset_window,
            Qt.Key.Key_N: self.next_stored_window,
            Qt.Key.Key_I: lambda: self.set_invert(not self._invert),
            Qt.Key.Key_O: lambda: self.set_overlays_shown(not self._show_overlays),
            Qt.Key.Key_F: lambda: self.set_zoom(None),
            Qt.Key.Key_1: self.actual_pixels,
            Qt.Key.Key_BracketLeft: lambda: self.rotate(-90),
            Qt.Key.Key_BracketRight: lambda: self.rotate(90),
            Qt.Key.Key_H: lambda: self.flip(True),
            Qt.Key.Key_V: lambda: self.flip(False),
            Qt.Key.Key_C: lambda: self.set_cine(not self.cine_running),
            Qt.Key.Key_Plus: lambda: self.set_cine(self.cine_running, self._cine_fps * 1.25),
            Qt.Key.Key_Equal: lambda: self.set_cine(self.cine_running, self._cine_fps * 1.25),
            Qt.Key.Key_Minus: lambda: self.set_cine(self.cine_running, self._cine_fps / 1.25),
            Qt.Key.Key_Delete: self.remove_last_measurement,
            Qt.Key.Key_Backspace: self.remove_last_measurement,
        }
        if key in moves and plain:
            return partial(self.set_index, moves[key])
        if key == Qt.Key.Key_R and mods == Qt.KeyboardModifier.ControlModifier:
            return self._reset_and_refresh
        if key == Qt.Key.Key_H and mods == Qt.KeyboardModifier.ControlModifier:
            return lambda: self.set_annotations(not self._annotations)
        if key in TOOL_KEYS and plain:
            return partial(self.set_tool, TOOL_KEYS[key])
        if key in PRESET_KEYS[:len(CT_PRESETS)] and plain and self._window is not None:
            return partial(self.apply_preset, list(CT_PRESETS)[PRESET_KEYS.index(key)])
        if key in actions and (plain or key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal)):
            return actions[key]
        return None

    def _reset_and_refresh(self) -> None:
        self.reset_view()
        self._refresh()

    def event(self, event: QEvent) -> bool:
        # The view's own keys win over the window's shortcuts while it has the focus: F5 here is
        # the lung window, not "refresh the study list".
        if event.type() == QEvent.Type.ShortcutOverride \
                and self._key_action(cast(QKeyEvent, event)) is not None:  # (a key event)
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        action = self._key_action(event)
        if action is None:
            super().keyPressEvent(event)
            return
        action()
        event.accept()

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.activated.emit()
