"""A rendered frame on screen: placed pixel for pixel at 1:1, smoothly interpolated when scaled.

The geometry of a viewport apart from what it shows: zoom, pan, rotation and flips map image
coordinates to the widget with whole-pixel placement. At one image pixel per screen pixel every
screen pixel shows exactly one display value the core computed; magnified or reduced, the frame is
interpolated bilinearly (a 64×64 MR is not a grid of blocks), unless the reader turns smoothing off
to see the stored pixels as blocks.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, QSize
from PySide6.QtGui import QImage, QPainter, QTransform
from PySide6.QtWidgets import QWidget

from app.imaging.measure import Point

ZOOM_LIMITS = (0.05, 64.0)


class FrameCanvas(QWidget):
    """Draws ``_image`` (over the buffer ``_pixels``) where the reader placed it; a subclass
    sets both when it renders a frame, or clears both."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixels: np.ndarray | None = None  # the buffer self._image points into
        self._image: QImage | None = None
        self._pixel_aspect = 1.0  # displayed width of a pixel relative to its height
        self._zoom: float | None = None  # screen pixels per image row; None: fit the widget
        self._pan = QPointF()
        self._rotation = 0  # clockwise degrees
        self._flip_h = self._flip_v = False
        self._smooth = True  # interpolate when scaled; nearest-neighbour when off

    @property
    def smooth(self) -> bool:
        """Whether a scaled frame is interpolated (it never is at 1:1)."""
        return self._smooth

    def set_smooth(self, on: bool) -> None:
        self._smooth = on
        self.update()

    @property
    def zoom(self) -> float:
        """Screen pixels per image row in use (the fitted scale unless the reader zoomed)."""
        return self._zoom if self._zoom is not None else self._fit_scale()

    @property
    def turn(self) -> tuple[int, bool, bool]:
        """The rotation (clockwise degrees) and the left-right and up-down flips after it."""
        return self._rotation, self._flip_h, self._flip_v

    def set_zoom(self, zoom: float | None) -> None:
        """Screen pixels per image row; None fits the image to the widget (and centres it)."""
        if zoom is None:
            self._zoom, self._pan = None, QPointF()
        else:
            self._zoom = min(max(zoom, ZOOM_LIMITS[0]), ZOOM_LIMITS[1])
        self.update()

    @property
    def pixel_aspect(self) -> float:
        return self._pixel_aspect

    def centre_on(self, point: Point, zoom: float) -> None:
        """Image point ``point`` in the middle of the widget at ``zoom`` (a displayed area's)."""
        self.set_zoom(zoom)
        self._pan = QPointF()
        self._pan = QPointF(self.width() / 2, self.height() / 2) - self.to_widget(point)
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
        self._flip_h = self._flip_v = False
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

    def sizeHint(self) -> QSize:
        return QSize(512, 512)

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

    def _draw_frame(self, painter: QPainter) -> bool:
        """The frame through the transform, leaving the painter untransformed; False without one."""
        if self._image is None or self._pixels is None:  # (set and cleared together)
            return False
        rows, cols = self._pixels.shape[:2]
        scale = self.zoom
        one_to_one = abs(scale - 1.0) < 1e-9 and abs(scale * self._pixel_aspect - 1.0) < 1e-9
        # At 1:1 (whole-pixel placement) every screen pixel is exactly a rendered value.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._smooth and not one_to_one)
        painter.setTransform(self._transform())
        painter.drawImage(QRectF(-0.5, -0.5, cols, rows), self._image)
        painter.resetTransform()
        return True
