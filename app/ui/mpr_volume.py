"""The MPR window's 3D pane: volume rendering built and drawn in the background.

The ray caster's first picture of a large volume takes seconds (see :mod:`app.ui.mpr_render`);
on the GUI thread it froze the planes the reader already had. Here a worker thread owns an
offscreen VTK renderer and draws whenever the reader has asked for something (a turn, a zoom, a
preset, a new size); what is asked while it draws is merged into the next picture, so a drag
costs one picture per frame the machine can draw. VTK releases Python's lock while it renders,
so the GUI thread goes on. VTK itself is imported on the worker thread, after the planes are up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPoint, QRectF, Qt, Signal
from PySide6.QtGui import QImage, QMouseEvent, QPainter, QPaintEvent, QResizeEvent, QTransform, QWheelEvent
from PySide6.QtWidgets import QWidget

from app.imaging.volume import Volume, coarser
from app.ui.bridge import Bridge
from app.ui.image_view import WHEEL_NOTCH, qimage
from app.ui.view_painting import HINT_COLOUR, OVERLAY_COLOUR, OverlayPainter

if TYPE_CHECKING:
    from app.ui.mpr_render import ControlPoints

# Shaded presets: (modality value, red, green, blue, opacity) control points. "MIP" is the
# brightest voxel on each ray instead.
RENDER_PRESETS: dict[str, ControlPoints] = {
    "Bone": ((-1000, 0, 0, 0, 0), (150, 0.55, 0.25, 0.15, 0), (300, 0.9, 0.82, 0.7, 0.35),
             (1500, 1, 1, 0.95, 0.85)),
    "Soft tissue": ((-1000, 0, 0, 0, 0), (-200, 0.3, 0.15, 0.1, 0), (40, 0.85, 0.45, 0.35, 0.15),
                    (300, 1, 0.9, 0.85, 0.4), (1500, 1, 1, 1, 0.7)),
    "Lung": ((-1000, 0, 0, 0, 0), (-900, 0.4, 0.4, 0.5, 0.05), (-500, 0.8, 0.8, 0.9, 0.15),
             (-200, 0, 0, 0, 0)),
}
MIP = "MIP"
PRESETS = (*RENDER_PRESETS, MIP)
TURN_PER_PANE = 200.0  # degrees a drag across the whole pane turns the volume (as VTK's trackball)
DOLLY_PER_NOTCH = 1.1
# The most voxels rendered in 3D: a 512 × 512 CT of more than about 120 slices is rendered from
# 2 × 2 averages (the planes keep every voxel). The ray caster's first picture of 300 such slices
# then takes a quarter of the time (2.5 s rather than 9 s on two cores, with shading).
RENDER_VOXELS = 32_000_000
VOLUME_HELP = "Drag: turn the volume   Wheel: zoom"


@dataclass(frozen=True)
class Wish:
    """What the next picture should be: its size and preset, and how far to turn and zoom the
    camera since the last picture."""

    size: tuple[int, int]
    preset: str
    azimuth: float = 0.0
    elevation: float = 0.0
    dolly: float = 1.0


class RenderLoop:
    """A :class:`~app.ui.mpr_render.VolumeRenderer` on a thread of its own; ``deliver(picture,
    preset)`` is called on that thread with each picture."""

    def __init__(self, volume: Volume, wish: Wish, deliver: Callable[[np.ndarray, str], None]) -> None:
        self._volume: Volume | None = volume
        self._wish = wish
        self._pending = True
        self._stopped = False
        self._deliver = deliver
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="volume-rendering", daemon=True)
        self._thread.start()

    def ask(self, *, size: tuple[int, int] | None = None, preset: str | None = None, azimuth: float = 0.0,
            elevation: float = 0.0, dolly: float = 1.0) -> None:
        with self._changed:
            w = self._wish
            self._wish = replace(w, size=size or w.size, preset=preset or w.preset,
                                 azimuth=w.azimuth + azimuth, elevation=w.elevation + elevation,
                                 dolly=w.dolly * dolly)
            self._pending = True
            self._changed.notify()

    def stop(self) -> None:
        """No more pictures; the thread lets the volume go once the one it draws is done."""
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def _next(self) -> Wish | None:
        with self._changed:
            while not self._pending and not self._stopped:
                self._changed.wait()
            if self._stopped:
                return None
            wish, self._pending = self._wish, False
            self._wish = Wish(wish.size, wish.preset)  # the turns and zoom are used up
            return wish

    def _run(self) -> None:
        from app.ui.mpr_render import MIP_POINTS, VolumeRenderer  # VTK's rendering: only here

        assert self._volume is not None
        renderer, self._volume = VolumeRenderer(coarser(self._volume, RENDER_VOXELS)), None
        preset = ""
        try:
            while (wish := self._next()) is not None:
                if wish.preset != preset:
                    preset = wish.preset
                    renderer.set_points(RENDER_PRESETS.get(preset, MIP_POINTS), preset == MIP)
                renderer.move_camera(wish.azimuth, wish.elevation, wish.dolly)
                self._deliver(renderer.render(wish.size), preset)
        finally:
            renderer.close()


class VolumePane(QWidget):
    """The 3D picture: a message until the volume is there and its first picture is drawn."""

    rendered = Signal(str)  # a picture in this preset is on the pane

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.preset = PRESETS[0]
        self.message = "The 3D view is built once the planes are shown…"
        self.shown_preset = ""  # the preset of the picture on the pane
        self.picture: np.ndarray | None = None
        self._image: QImage | None = None
        self._fresh = False  # a picture arrived and is not yet painted
        self._loop: RenderLoop | None = None
        self._drag: QPoint | None = None
        self._wheel_rest = 0
        self._arrived = Bridge(self._show, self)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMinimumSize(96, 96)
        self.setToolTip(VOLUME_HELP)

    def start(self, volume: Volume) -> None:
        """Build the rendering of ``volume`` in the background."""
        self.message = "Building the 3D view…"
        self._loop = RenderLoop(volume, Wish(self._size(), self.preset), self._arrived.post)
        self.destroyed.connect(self._loop.stop)
        self.update()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self.picture = self._image = None
        self.shown_preset = ""

    def set_preset(self, name: str) -> None:
        self.preset = name
        if self._loop is not None:
            self._loop.ask(preset=name)

    def _size(self) -> tuple[int, int]:
        ratio = self.devicePixelRatioF()
        return max(1, round(self.width() * ratio)), max(1, round(self.height() * ratio))

    def _show(self, picture: np.ndarray, preset: str) -> None:
        if self._loop is None:
            return  # stopped meanwhile
        self.picture, self._image = picture, qimage(picture)
        self._image.setDevicePixelRatio(self.devicePixelRatioF())
        self.shown_preset = preset
        self._fresh = True
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        overlay = OverlayPainter(painter, self, QTransform(), 1.0)
        if self._image is None:
            overlay.text(Qt.AlignmentFlag.AlignCenter, self.message, HINT_COLOUR, shadow=False)
            return
        # A picture drawn for an older size stretches until the one for this size arrives.
        size = self._image.deviceIndependentSize()
        scale = min(self.width() / size.width(), self.height() / size.height())
        box = QRectF(0, 0, size.width() * scale, size.height() * scale)
        box.moveCenter(QRectF(self.rect()).center())
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(box, self._image)
        overlay.text(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft, f"3D  {self.shown_preset}",
                     OVERLAY_COLOUR)
        if self._fresh:
            self._fresh = False
            self.rendered.emit(self.shown_preset)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._loop is not None:
            self._loop.ask(size=self._size())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag = event.position().toPoint()
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None and self._loop is not None:
            delta = event.position().toPoint() - self._drag
            self._drag = event.position().toPoint()
            self._loop.ask(azimuth=-TURN_PER_PANE * delta.x() / max(self.width(), 1),
                           elevation=TURN_PER_PANE * delta.y() / max(self.height(), 1))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / WHEEL_NOTCH)
        if steps and self._loop is not None:
            self._wheel_rest -= steps * WHEEL_NOTCH
            self._loop.ask(dolly=DOLLY_PER_NOTCH ** steps)
        event.accept()
