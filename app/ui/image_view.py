"""A 2D viewport: one frame of a series, windowed by the core, drawn pixel for pixel.

The core turns stored values into 8-bit display values (rescale, VOI window, MONOCHROME1
inversion). This widget only scales them to the screen with nearest-neighbour sampling, so the
grey levels a reader sees are exactly the ones the core computed, and it turns the mouse and
keys into slice and window changes.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFocusEvent,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.series import SeriesImages

CONTROLS_HELP = (
    "Mouse wheel, ↑/↓: previous / next image",
    "Page Up / Page Down: jump a tenth of the series",
    "Home / End: first / last image",
    "Left-drag: window (← → width, ↑ ↓ level)",
    "R: reset the window to the series default",
)

OVERLAY_COLOUR = QColor(236, 214, 120)
HINT_COLOUR = QColor(110, 114, 120)
OVERLAY_MARGIN = 6
OVERLAY_PIXEL_SIZE = 12
WHEEL_NOTCH = 120  # angleDelta units of one wheel click
DRAG_PIXELS_PER_WIDTH = 250.0  # dragging this far changes the window by one default width


def _level_text(value: float) -> str:
    """Window numbers as readers quote them: whole numbers, decimals only for small ranges."""
    return f"{value:.0f}" if abs(value) >= 100 or value == round(value) else f"{value:.3g}"


class ImageView(QWidget):
    """Shows frame ``index`` of a :class:`SeriesImages` with window ``window``."""

    indexChanged = Signal(int)
    windowChanged = Signal(object)  # Window | None
    failed = Signal(str)  # a CustodianError's plain message; the view is then empty
    activated = Signal()  # took the focus: the reader is working in this view

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._series: SeriesImages | None = None
        self._index = 0
        self._window: Window | None = None
        self._default_width = 1.0
        self._window_chosen = False  # the reader set the window: keep it across slices
        self._pixels: np.ndarray | None = None  # the buffer self._image points into
        self._image: QImage | None = None
        self._pixel_aspect = 1.0  # displayed width of a pixel relative to its height
        self._drag: tuple[QPoint, Window] | None = None
        self._wheel_rest = 0
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
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
    def window(self) -> Window | None:
        """The VOI window in use; None for colour images and when nothing is shown."""
        return self._window

    @property
    def chosen_window(self) -> Window | None:
        """The window the reader set (kept across slices); None while the series default applies."""
        return self._window if self._window_chosen else None

    def set_series(self, series: SeriesImages | None) -> None:
        self._series = series if series is not None and len(series) else None
        self._index = 0
        self._window_chosen = False
        self._window = None
        self._drag = None
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
        """Back to what the series says (its stored window, else the frame's value range)."""
        if self._series is None:
            return
        before = self._window
        self._window_chosen = False
        self._refresh()
        if self._window != before:
            self.windowChanged.emit(self._window)

    def image_rect(self) -> QRect:
        """Where the frame is drawn: fitted to the widget, centred, true to PixelSpacing."""
        if self._pixels is None:
            return QRect()
        rows, cols = self._pixels.shape[:2]
        scale = min(self.width() / (cols * self._pixel_aspect), self.height() / rows)
        width, height = round(cols * self._pixel_aspect * scale), round(rows * scale)
        return QRect((self.width() - width) // 2, (self.height() - height) // 2, width, height)

    def overlay_text(self) -> tuple[str, str]:
        """The bottom-left and bottom-right corner texts (nothing that identifies the patient)."""
        if self._series is None:
            return "", ""
        position = f"Im {self._index + 1}/{len(self._series)}"
        if self._window is None:
            return position, ""
        if not self._window_chosen and self._series.uses_voi_lut(self._index):
            return position, "VOI LUT"
        return position, f"W:{_level_text(self._window.width)} L:{_level_text(self._window.center)}"

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
            pixels = np.ascontiguousarray(series.render(self._index, chosen))
        except CustodianError as exc:
            self._series = None
            self._pixels = self._image = None
            self._window = None
            self.update()
            self.failed.emit(str(exc))
            return
        rows, cols = pixels.shape[:2]
        fmt = QImage.Format.Format_Grayscale8 if pixels.ndim == 2 else QImage.Format.Format_RGB888
        # QImage does not copy: self._pixels keeps the buffer alive as long as the image.
        self._pixels = pixels
        self._image = QImage(pixels.data, cols, rows, pixels.strides[0], fmt)
        spacing = info.pixel_spacing
        self._pixel_aspect = (spacing[1] / spacing[0]
                              if spacing and len(spacing) >= 2 and spacing[0] > 0 and spacing[1] > 0
                              else 1.0)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        if self._image is None:
            self._draw_text(painter, Qt.AlignmentFlag.AlignCenter, "No series", HINT_COLOUR, shadow=False)
            return
        # Nearest-neighbour: at an integer zoom every screen pixel is exactly a rendered value.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(self.image_rect(), self._image)
        left, right = self.overlay_text()
        bottom = Qt.AlignmentFlag.AlignBottom
        self._draw_text(painter, bottom | Qt.AlignmentFlag.AlignLeft, left, OVERLAY_COLOUR)
        self._draw_text(painter, bottom | Qt.AlignmentFlag.AlignRight, right, OVERLAY_COLOUR)

    def _draw_text(self, painter: QPainter, align: Qt.AlignmentFlag, text: str, colour: QColor,
                   *, shadow: bool = True) -> None:
        if not text:
            return
        font = QFont(self.font())
        font.setPixelSize(OVERLAY_PIXEL_SIZE)
        painter.setFont(font)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        area = self.rect().adjusted(OVERLAY_MARGIN, OVERLAY_MARGIN, -OVERLAY_MARGIN, -OVERLAY_MARGIN)
        if shadow:  # keeps the text legible over bright anatomy
            painter.setPen(QColor(0, 0, 0, 200))
            painter.drawText(area.translated(1, 1), align, text)
        painter.setPen(colour)
        painter.drawText(area, align, text)

    def sizeHint(self) -> QSize:
        return QSize(512, 512)

    # ------------------------------------------------------------------ interaction
    def wheelEvent(self, event: QWheelEvent) -> None:
        # Accumulate so high-resolution wheels and touchpads step once per notch's worth.
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / WHEEL_NOTCH)
        if steps:
            self._wheel_rest -= steps * WHEEL_NOTCH
            self.set_index(self._index - steps)  # wheel towards the reader: further into the stack
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._window is not None:
            self._drag = (event.position().toPoint(), self._window)
            self.setCursor(Qt.CursorShape.SizeAllCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is None:
            super().mouseMoveEvent(event)
            return
        origin, start = self._drag
        delta = event.position().toPoint() - origin
        unit = self._default_width / DRAG_PIXELS_PER_WIDTH
        self.set_window(Window(start.center + delta.y() * unit, max(1.0, start.width + delta.x() * unit)))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None and event.button() == Qt.MouseButton.LeftButton:
            self._drag = None
            self.unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self._series is None:
            super().keyPressEvent(event)
            return
        page = max(1, len(self._series) // 10)
        moves = {
            Qt.Key.Key_Up: self._index - 1,
            Qt.Key.Key_Down: self._index + 1,
            Qt.Key.Key_PageUp: self._index - page,
            Qt.Key.Key_PageDown: self._index + page,
            Qt.Key.Key_Home: 0,
            Qt.Key.Key_End: len(self._series) - 1,
        }
        key = Qt.Key(event.key())
        if key in moves:
            self.set_index(moves[key])
        elif key == Qt.Key.Key_R and event.modifiers() == Qt.KeyboardModifier.NoModifier:
            self.reset_window()
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.activated.emit()
