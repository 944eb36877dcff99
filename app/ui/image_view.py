"""A 2D viewport: one frame of a series, windowed by the core, drawn on screen.

The core turns stored values into 8-bit display values (rescale, LUTs, window, inversion,
overlays) and measures (:mod:`app.imaging.measure`). This widget keeps what the reader is looking at
(series, image, window, tool, measurements) and turns the mouse into requests; the rest is in
rooms of its own: :mod:`app.ui.frame_canvas` places the frame on the screen (exact at 1:1,
interpolated when scaled unless smoothing is off), :mod:`app.ui.view_painting` draws the text,
orientation letters and scale bar over it, :mod:`app.ui.measure_tools` draws, picks and edits the
measurements, :mod:`app.ui.corner_text` words the bottom corners and :mod:`app.ui.view_controls` holds
the tools and keys. An image that cannot be shown says why in the viewport itself.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QFocusEvent, QImage, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QWheelEvent
from PySide6.QtWidgets import QInputDialog, QLineEdit, QWidget

from app import trace
from app.errors import CustodianError
from app.imaging.display import CT_PRESETS, Window
from app.imaging.geometry import edge_letters
from app.imaging.measure import Measurement, Point
from app.imaging.series import SeriesImages
from app.ui.corner_text import bottom_text
from app.ui.frame_canvas import FrameCanvas
from app.ui.measure_tools import CLICK_SLOP, MeasureTools
from app.ui.view_controls import CONTROLS_HELP, Tool, key_action
from app.ui.view_painting import OverlayPainter

WHEEL_NOTCH = 120  # angleDelta units of one wheel click
DRAG_PIXELS_PER_WIDTH = 250.0  # dragging this far changes the window by one default width
ZOOM_DRAG_PIXELS = 200.0  # dragging this far up doubles the zoom
CINE_FPS = 10.0
CINE_LIMITS = (1.0, 60.0)


def qimage(pixels: np.ndarray) -> QImage:
    """Contiguous display-ready 8-bit grey (rows, cols) or RGB (rows, cols, 3) pixels as a QImage
    over the same buffer (no copy: the caller keeps ``pixels`` alive while the image is used)."""
    rows, cols = pixels.shape[:2]
    fmt = QImage.Format.Format_Grayscale8 if pixels.ndim == 2 else QImage.Format.Format_RGB888
    return QImage(pixels.data, cols, rows, pixels.strides[0], fmt)


class ImageView(FrameCanvas):
    """Shows frame ``index`` of a :class:`SeriesImages` with window ``window``."""

    indexChanged = Signal(int)
    windowChanged = Signal(object)  # Window | None
    failed = Signal(str)  # a CustodianError's plain message; the view then shows it instead
    activated = Signal()  # took the focus: the reader is working in this view
    measured = Signal(object)  # a finished Measurement (to be saved)
    measurementRemoved = Signal(object)  # a Measurement deleted (or changed: its new self is measured)
    toolChanged = Signal(object)  # Tool

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
        self._tool = Tool.WINDOW
        # the button, where the drag began, and the window, pan or zoom it started from
        self._drag: tuple[Qt.MouseButton, QPoint, Window | QPointF | float] | None = None
        self._tools = MeasureTools(self)
        self._focus_click = False  # the press under way is the one that brought the focus here
        self._values: tuple[int, np.ndarray] | None = None  # the shown frame's modality values
        self._reference_lines: list[tuple[Point, Point]] = []
        self._corners: tuple[list[str], list[str]] = ([], [])
        self._annotations = True  # corner text, orientation letters, scale bar
        self._problem = ""  # why the last series could not be shown, drawn in its place
        self._boxes: dict[str, QRect] = {}  # where the last paint put the annotations
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
    def inverted(self) -> bool:
        return self._invert

    @property
    def overlays_shown(self) -> bool:
        """Whether the series' overlay planes are burnt into the rendered frame."""
        return self._show_overlays

    @property
    def annotations_shown(self) -> bool:
        """Whether the corner text, orientation letters and scale bar are drawn."""
        return self._annotations

    @property
    def tool(self) -> Tool:
        return self._tool

    @property
    def cine_running(self) -> bool:
        return self._cine.isActive()

    @property
    def cine_fps(self) -> float:
        return self._cine_fps

    @property
    def measurements(self) -> list[Measurement]:
        return list(self._tools.items)

    @property
    def selected(self) -> Measurement | None:
        """The measurement the reader picked (Delete deletes it), None when none is."""
        return self._tools.selected

    @property
    def label_boxes(self) -> list[QRect]:
        """Where the last paint put the measurements' labels (widget pixels)."""
        return list(self._tools.label_boxes.values())

    @property
    def problem(self) -> str:
        """Why the view is empty when a series could not be shown ("" otherwise)."""
        return self._problem

    @property
    def annotation_boxes(self) -> dict[str, QRect]:
        """Where the last paint drew the corner texts, edge letters and scale bar (widget pixels)."""
        return dict(self._boxes)

    def set_series(self, series: SeriesImages | None,
                   measurements: list[Measurement] | None = None) -> None:
        self._series = series if series is not None and len(series) else None
        self._problem = ""
        self._index = 0
        self._window_chosen = False
        self._stored_choice = 0
        self._window = None
        self._drag = None
        self._values = None
        self._tools.reset(list(measurements or []))
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
        self._tools.cancel()
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
        """Use ``tool`` from now on (a measurement half drawn, and the selection, are dropped)."""
        self._tools.cancel(deselect=True)
        if tool is Tool.WINDOW:
            self.unsetCursor()
        else:
            self.setCursor(Qt.CursorShape.CrossCursor)
        if tool is not self._tool:
            self._tool = tool
            self.toolChanged.emit(tool)

    def reset_view(self) -> None:
        """The fitted, upright view, uninverted (the inversion goes once the frame is rendered again)."""
        self._invert = False
        super().reset_view()

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
        self._tools.adopt(measurement)

    def delete_selected(self) -> None:
        self._tools.delete_selected()

    def delete_all_on_image(self) -> None:
        self._tools.delete(self._tools.on_frame())

    def undo_delete(self) -> None:
        self._tools.undo_delete()

    def frame_values(self) -> np.ndarray:
        """The modality values (e.g. HU) of the shown frame, kept while it is shown."""
        assert self._series is not None
        if self._values is None or self._values[0] != self._index:
            self._values = (self._index, self._series.values(self._index))
        return self._values[1]

    def show_problem(self, message: str) -> None:
        """Show nothing but ``message``: why this viewport's series cannot be shown."""
        self.set_series(None)
        self._problem = message
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

    def overlay_text(self) -> tuple[str, str]:
        """The bottom-left and bottom-right corner texts (nothing that identifies the patient)."""
        if self._series is None:
            return "", ""
        return bottom_text(self._series, self._index, self._window, self._window_chosen,
                           self._cine_fps if self._cine.isActive() else None, self.zoom)

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
        return [self._tools.label(m) for m in self._tools.on_frame()]

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
            self._problem = str(exc)
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
        overlay = OverlayPainter(painter, self, self._transform(), self.zoom)
        self._boxes = overlay.boxes
        if not self._draw_frame(painter):
            overlay.empty(self._problem)
            return
        if trace.enabled():
            trace.mark("view.painted", index=self._index)
        overlay.reference_lines(self._reference_lines)
        if self._annotations:
            overlay.annotations(self.overlay_text(), self._corners, self.edge_text(),
                                self._mm_per_screen_pixel())
        self._tools.paint(painter, overlay, self._transform(), self._image, list(self._boxes.values()))

    def _mm_per_screen_pixel(self) -> float | None:
        if self._series is None:
            return None
        spacing = self._series.info(self._index).pixel_spacing
        if not spacing or len(spacing) < 2 or spacing[0] <= 0:
            return None
        return spacing[0] / self.zoom

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
        focusing, self._focus_click = self._focus_click, False
        if self._pixels is None:
            super().mousePressEvent(event)
            return
        if button == Qt.MouseButton.LeftButton and self._tools.press(event.position(), self._tool, focusing):
            pass
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
        if self._drag is None and self._tools.move(event.position()):
            event.accept()
            return
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
        if self._drag is not None and event.button() == self._drag[0]:
            button, origin, _ = self._drag
            self._drag = None
            if self._tool is Tool.WINDOW:
                self.unsetCursor()
            if button == Qt.MouseButton.RightButton \
                    and (event.position().toPoint() - origin).manhattanLength() <= CLICK_SLOP:
                self.show_menu(event.position())  # a right click, not a zooming drag
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton and self._tools.release(event.position()):
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._pixels is not None \
                and self._tools.double_click(event.position()):
            event.accept()
            return
        self.mousePressEvent(event)  # as Qt does: the second press of a double-click

    def show_menu(self, pos: QPointF) -> None:
        """The right-click menu: delete this measurement or all on this image, undo a delete."""
        menu = self._tools.menu(pos)
        if menu is not None:
            menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            menu.popup(self.mapToGlobal(pos.toPoint()))

    def ask_text(self, current: str) -> str:
        """The words of a text note or an arrow (a dialog; tests replace it)."""
        text, ok = QInputDialog.getText(self, "Words on this image", "Words:", QLineEdit.EchoMode.Normal,
                                        current)
        return text.strip() if ok else current

    def event(self, event: QEvent) -> bool:
        # The view's own keys win over the window's shortcuts while it has the focus: F5 here is
        # the lung window, not "refresh the study list".
        if event.type() == QEvent.Type.ShortcutOverride \
                and key_action(self, cast(QKeyEvent, event)) is not None:  # (a key event)
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        action = key_action(self, event)
        if action is None:
            super().keyPressEvent(event)
            return
        action()
        event.accept()

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        # Qt gives the focus before it delivers the press that brought it: that press only focuses.
        self._focus_click = event.reason() == Qt.FocusReason.MouseFocusReason
        self.activated.emit()
