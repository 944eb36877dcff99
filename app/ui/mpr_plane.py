"""One MPR plane on screen: the windowed reformat, the other two planes' cursor lines, and what
the reader needs to know about it (which plane, orientation letters, slice and position, slab,
window, scale).

Plain Qt painting of a numpy image (no OpenGL), so the planes appear as soon as the volume is in
memory, on any display. The pane fits the plane to its size at every paint (so a resize redraws
it), with each pixel as wide and high as its spacing in mm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen, QWheelEvent
from PySide6.QtWidgets import QWidget

from app.imaging.display import Window, apply_window
from app.imaging.geometry import edge_letters
from app.ui.corner_text import level_text
from app.ui.frame_canvas import FrameCanvas
from app.ui.image_view import DRAG_PIXELS_PER_WIDTH, WHEEL_NOTCH, qimage
from app.ui.view_painting import HINT_COLOUR, OverlayPainter

if TYPE_CHECKING:  # (VTK's reslicing loads on a worker thread, not with the panes)
    from app.imaging.mpr import PlaneView

CURSOR_COLOUR = {"axial": QColor(77, 153, 255), "coronal": QColor(102, 230, 102),
                 "sagittal": QColor(255, 153, 51)}
PLANE_NAMES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
SLAB_LABELS = {"mip": "MIP", "minip": "MinIP", "mean": "Average"}
PANE_HELP = ("Click or drag: move the other planes through this point\n"
             "Wheel, ↑/↓: previous / next slice   Right-drag: window (across: width, up/down: level)\n"
             "Ctrl+H: hide / show the text   Esc or Ctrl+W: close")


class PlanePane(FrameCanvas):
    """One plane of the MPR: shows a :class:`PlaneView` through a window and turns the reader's
    clicks, drags and wheel into requests to the MPR window."""

    clicked = Signal(float, float)  # image column, row
    scrolled = Signal(int)  # slices forward (+) or back (-)
    windowed = Signal(object)  # the Window the reader dragged to
    painted = Signal()  # a plane was drawn (the window marks when all three are on screen)

    def __init__(self, plane: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plane = plane
        self.view: PlaneView | None = None
        self.window_in_use: Window | None = None
        self.annotations = True
        self.message = "Loading the volume…"
        self._window_drag: tuple[QPoint, Window] | None = None
        self._wheel_rest = 0
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setMinimumSize(96, 96)
        self.setToolTip(PANE_HELP)

    def show_view(self, view: PlaneView, window: Window) -> None:
        self.view = view
        self.set_window(window)

    def set_window(self, window: Window) -> None:
        """Window the plane's values again (no new reformat)."""
        self.window_in_use = window
        view = self.view
        if view is not None:
            pixels = np.ascontiguousarray(apply_window(view.values, window))
            self._pixels, self._image = pixels, qimage(pixels)
            self._pixel_aspect = view.spacing[0] / view.spacing[1]
        self.update()

    def set_annotations(self, on: bool) -> None:
        self.annotations = on
        self.update()

    def clear(self, message: str) -> None:
        """Nothing but ``message`` (the volume is gone or not there yet)."""
        self.view, self._pixels, self._image = None, None, None
        self.message = message
        self.update()

    def texts(self) -> dict[str, str]:
        """What the pane writes over the plane: title, slab, position, window and edge letters."""
        view, window = self.view, self.window_in_use
        if view is None or window is None:
            return {}
        title = f"Oblique {view.tilt:+.0f}°" if view.tilt else PLANE_NAMES[view.plane]
        slab = f"{SLAB_LABELS[view.slab_mode]} {view.slab} slices" if view.slab > 1 else ""
        return {"title": title, "slab": slab,
                "position": f"{view.index + 1}/{view.extent}  {view.location:.1f} mm",
                "window": f"W:{level_text(window.width)} L:{level_text(window.center)}",
                **edge_letters(view.orientation)}

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        overlay = OverlayPainter(painter, self, self._transform(), self.zoom)
        if self.view is None or not self._draw_frame(painter):
            overlay.text(Qt.AlignmentFlag.AlignCenter, self.message, HINT_COLOUR, shadow=False)
            return
        self._draw_cursor(painter, self.view)
        if self.annotations:
            texts = self.texts()
            overlay.annotations((texts["position"], texts["window"]), ([texts["title"]], [texts["slab"]]),
                                {edge: texts[edge] for edge in ("left", "right", "top", "bottom")},
                                self.view.spacing[1] / self.zoom)
        painter.end()
        self.painted.emit()

    def _draw_cursor(self, painter: QPainter, view: PlaneView) -> None:
        """The vertical line where the first crossing plane cuts, the horizontal one of the second."""
        rows, cols = view.values.shape
        x, y = view.cursor
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        vertical, horizontal = view.crossing
        for other, a, b in ((vertical, (x, -0.5), (x, rows - 0.5)), (horizontal, (-0.5, y), (cols - 0.5, y))):
            painter.setPen(QPen(CURSOR_COLOUR[other], 1))
            painter.drawLine(self.to_widget(a), self.to_widget(b))

    # ------------------------------------------------------------------ interaction
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self.view is not None and event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(*self.to_image(event.position()))
        elif self.window_in_use is not None and event.button() == Qt.MouseButton.RightButton:
            self._window_drag = (event.position().toPoint(), self.window_in_use)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self.view is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self.clicked.emit(*self.to_image(event.position()))
        elif self._window_drag is not None and event.buttons() & Qt.MouseButton.RightButton:
            origin, start = self._window_drag
            delta = event.position().toPoint() - origin
            unit = start.width / DRAG_PIXELS_PER_WIDTH
            self.windowed.emit(Window(start.center + delta.y() * unit,
                                      max(1.0, start.width + delta.x() * unit)))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._window_drag = None
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        # Accumulated, so high-resolution wheels and touchpads step once per notch's worth.
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / WHEEL_NOTCH)
        if steps:
            self._wheel_rest -= steps * WHEEL_NOTCH
            self.scrolled.emit(-steps)  # towards the reader: further along, as in the 2D viewer
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        steps = {Qt.Key.Key_Up: -1, Qt.Key.Key_Down: 1}.get(Qt.Key(event.key()), 0)
        if steps and self.view is not None:
            self.scrolled.emit(steps)
            event.accept()
            return
        super().keyPressEvent(event)
