"""MPR and 3D: axial, coronal and sagittal planes with linked cursors, thick slabs, an oblique
tilt, and volume rendering, each in a VTK render window embedded in Qt.

The planes come from :class:`app.imaging.mpr.Reslicer` and are windowed by the same function as
the 2D viewer; the panes only show them (one voxel per screen pixel at the fitted zoom, no
interpolation) and turn clicks and the wheel into cursor moves. VTK's Qt widget needs a real
display (X11, Wayland, Windows, macOS); on Qt's offscreen platform the window refuses plainly.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QMouseEvent, QResizeEvent, QShowEvent, QWheelEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from vtkmodules import vtkRenderingOpenGL2, vtkRenderingVolumeOpenGL2  # noqa: F401  (VTK's OpenGL backend)
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonCore import VTK_UNSIGNED_CHAR
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPiecewiseFunction
from vtkmodules.vtkFiltersSources import vtkLineSource
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkColorTransferFunction,
    vtkImageActor,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkVolume,
    vtkVolumeProperty,
    vtkWindowToImageFilter,
)
from vtkmodules.vtkRenderingVolume import vtkFixedPointVolumeRayCastMapper

from app.errors import CustodianError
from app.imaging.display import CT_PRESETS, Window, apply_window
from app.imaging.mpr import PLANES, Reslicer
from app.imaging.volume import SLABS, Volume

CURSOR_COLOUR = {"axial": (0.3, 0.6, 1.0), "coronal": (0.4, 0.9, 0.4), "sagittal": (1.0, 0.6, 0.2)}
# Volume rendering presets: (modality value, red, green, blue, opacity) control points.
RENDER_PRESETS: dict[str, tuple[tuple[float, float, float, float, float], ...]] = {
    "Bone": ((-1000, 0, 0, 0, 0), (150, 0.55, 0.25, 0.15, 0), (300, 0.9, 0.82, 0.7, 0.35),
             (1500, 1, 1, 0.95, 0.85)),
    "Soft tissue": ((-1000, 0, 0, 0, 0), (-200, 0.3, 0.15, 0.1, 0), (40, 0.85, 0.45, 0.35, 0.15),
                    (300, 1, 0.9, 0.85, 0.4), (1500, 1, 1, 1, 0.7)),
    "Lung": ((-1000, 0, 0, 0, 0), (-900, 0.4, 0.4, 0.5, 0.05), (-500, 0.8, 0.8, 0.9, 0.15),
             (-200, 0, 0, 0, 0)),
}
SLAB_LABELS = {"mip": "MIP", "minip": "MinIP", "mean": "Average"}


def display_available() -> bool:
    return QGuiApplication.platformName() not in ("offscreen", "minimal")


def _grab(window: QVTKRenderWindowInteractor) -> np.ndarray:
    """What a render window shows, as (rows, columns, 3) with row 0 at the top."""
    render_window = window.GetRenderWindow()
    render_window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(render_window)
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3].copy()


class PlanePane(QVTKRenderWindowInteractor):
    """One plane: the windowed image and the other two planes' cursor lines."""

    clicked = Signal(float, float)  # image column, row
    scrolled = Signal(int)  # slices forward (+) or back (-)

    def __init__(self, plane: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plane = plane
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(0, 0, 0)
        self.GetRenderWindow().AddRenderer(self.renderer)
        self.actor = vtkImageActor()
        self.actor.InterpolateOff()
        self.actor.GetMapper().BorderOn()  # whole edge pixels, not cut at the edge pixels' centres
        self.renderer.AddActor(self.actor)
        self._lines = []
        for _ in range(2):
            source = vtkLineSource()
            mapper = vtkPolyDataMapper()
            mapper.SetInputConnection(source.GetOutputPort())
            actor = vtkActor()
            actor.SetMapper(mapper)
            self.renderer.AddActor(actor)
            self._lines.append((source, actor))
        self._image = vtkImageData()
        self._size = (1, 1)
        self._spacing = (1.0, 1.0)
        self.setToolTip("Wheel: next / previous slice; click: move the cursor here")

    def show_image(self, pixels: np.ndarray, spacing: tuple[float, float],
                   cursor: tuple[float, float], colours: tuple[tuple[float, ...], ...]) -> None:
        """8-bit ``pixels`` (row 0 at the top), pixel ``spacing`` (x, y) in mm, cursor (column, row)."""
        rows, cols = pixels.shape
        flat = np.ascontiguousarray(pixels[::-1]).reshape(-1)  # VTK's rows run upwards
        image = vtkImageData()
        image.SetDimensions(cols, rows, 1)
        image.SetSpacing(spacing[0], spacing[1], 1.0)
        image.GetPointData().SetScalars(numpy_to_vtk(flat, deep=True, array_type=VTK_UNSIGNED_CHAR))
        self._image = image
        self.actor.SetInputData(image)
        self._size, self._spacing = (cols, rows), spacing
        x, y = cursor[0] * spacing[0], (rows - 1 - cursor[1]) * spacing[1]
        width, height = (cols - 0.5) * spacing[0], (rows - 0.5) * spacing[1]
        ends = (((x, -0.5 * spacing[1], 1), (x, height, 1)), ((-0.5 * spacing[0], y, 1), (width, y, 1)))
        for (source, actor), (a, b), colour in zip(self._lines, ends, colours, strict=True):
            source.SetPoint1(*a)
            source.SetPoint2(*b)
            actor.GetProperty().SetColor(*colour)
        self._fit()
        self.GetRenderWindow().Render()

    def _fit(self) -> None:
        """Parallel projection with the whole image in view, centred."""
        cols, rows = self._size
        sx, sy = self._spacing
        camera = self.renderer.GetActiveCamera()
        camera.ParallelProjectionOn()
        cx, cy = (cols - 1) * sx / 2, (rows - 1) * sy / 2
        camera.SetFocalPoint(cx, cy, 0)
        camera.SetPosition(cx, cy, 1000)
        camera.SetViewUp(0, 1, 0)
        width, height = max(self.width(), 1), max(self.height(), 1)
        camera.SetParallelScale(max(rows * sy, cols * sx * height / width) / 2)
        self.renderer.ResetCameraClippingRange()

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Image column and row of a widget position (the inverse of the fitted camera)."""
        rows = self._size[1]
        sx, sy = self._spacing
        camera = self.renderer.GetActiveCamera()
        per_pixel = 2 * camera.GetParallelScale() / max(self.height(), 1)
        fx, fy, _ = camera.GetFocalPoint()
        wx = fx + (x - self.width() / 2) * per_pixel
        wy = fy - (y - self.height() / 2) * per_pixel
        return wx / sx, rows - 1 - wy / sy

    def pixels(self) -> np.ndarray:
        return _grab(self)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(*self.to_image(event.position().x(), event.position().y()))
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.clicked.emit(*self.to_image(event.position().x(), event.position().y()))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() // 120
        if steps:
            self.scrolled.emit(-steps)
        event.accept()


class VolumePane(QVTKRenderWindowInteractor):
    """Volume rendering with presets; drag to turn it, wheel to zoom (VTK's trackball)."""

    def __init__(self, reslicer: Reslicer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(0, 0, 0)
        self.GetRenderWindow().AddRenderer(self.renderer)
        self.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        self.mapper = vtkFixedPointVolumeRayCastMapper()  # CPU: the same image on every machine
        self.mapper.SetInputData(reslicer.image)
        self.volume_property = vtkVolumeProperty()  # (not "property": QObject.property() is Qt's)
        self.volume_property.SetInterpolationTypeToLinear()
        self.volume_property.ShadeOn()
        self.volume = vtkVolume()
        self.volume.SetMapper(self.mapper)
        self.volume.SetProperty(self.volume_property)
        self.renderer.AddVolume(self.volume)
        self.preset = ""
        self.set_preset("Bone")
        camera = self.renderer.GetActiveCamera()
        camera.SetViewUp(0, 0, 1)  # the head up
        camera.SetPosition(0, -1, 0)  # seen from the front (anterior is -y in LPS)
        camera.SetFocalPoint(0, 0, 0)
        self.renderer.ResetCamera()
        self.setToolTip("Drag: turn the volume; right-drag or wheel: zoom")

    def set_preset(self, name: str) -> None:
        colour, opacity = vtkColorTransferFunction(), vtkPiecewiseFunction()
        if name == "MIP":
            self.mapper.SetBlendModeToMaximumIntensity()
            self.volume_property.ShadeOff()
            colour.AddRGBPoint(-1000, 0, 0, 0)
            colour.AddRGBPoint(1500, 1, 1, 1)
            opacity.AddPoint(-1000, 0)
            opacity.AddPoint(1500, 1)
        else:
            self.mapper.SetBlendModeToComposite()
            self.volume_property.ShadeOn()
            for value, r, g, b, alpha in RENDER_PRESETS[name]:
                colour.AddRGBPoint(value, r, g, b)
                opacity.AddPoint(value, alpha)
        self.volume_property.SetColor(colour)
        self.volume_property.SetScalarOpacity(opacity)
        self.preset = name
        self.GetRenderWindow().Render()

    def pixels(self) -> np.ndarray:
        return _grab(self)


class MprWindow(QWidget):
    """Three linked planes and a 3D view of one volume."""

    # The window's own state under names QWidget gives methods (cursor(), window(), move()); its
    # callers and the 3D tests use these names.
    cursor: dict[str, int]  # type: ignore[assignment]  # the slice each plane shows, not QWidget's
    window: Window  # type: ignore[assignment]  # the VOI window, not QWidget.window()

    def __init__(self, volume: Volume, title: str = "3D / MPR", parent: QWidget | None = None) -> None:
        if not display_available():
            raise CustodianError("3D needs a display: VTK cannot draw on Qt's offscreen platform.")
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle(title)
        self.volume = volume
        self.reslicer = Reslicer(volume)
        slices, rows, cols = volume.shape
        self.cursor = {"axial": slices // 2, "coronal": rows // 2, "sagittal": cols // 2}
        self.window = volume.window
        self.slab_mode = ""  # "" for a single slice, else one of SLABS
        self.slab_mm = 10.0
        self.tilt = 0.0
        self.panes = {plane: PlanePane(plane, self) for plane in PLANES}
        self.volume_pane = VolumePane(self.reslicer, self)
        grid = QGridLayout()
        grid.setSpacing(2)
        for pane, (r, c) in zip([*self.panes.values(), self.volume_pane], [(0, 0), (0, 1), (1, 0), (1, 1)],
                                strict=True):
            grid.addWidget(pane, r, c)
        for plane, pane in self.panes.items():
            pane.clicked.connect(lambda x, y, plane=plane: self.click(plane, x, y))
            pane.scrolled.connect(lambda steps, plane=plane: self.move(plane, steps))
        controls = QHBoxLayout()
        self.window_box = QComboBox()
        self.window_box.setToolTip("Window preset")
        self.window_box.addItems(["Series default", *CT_PRESETS])
        self.window_box.currentTextChanged.connect(self._window_chosen)
        self.slab_box = QComboBox()
        self.slab_box.setToolTip("Thick slab: maximum, minimum or average intensity")
        self.slab_box.addItem("Single slice", "")
        for mode in SLABS:
            self.slab_box.addItem(SLAB_LABELS[mode], mode)
        self.slab_box.currentIndexChanged.connect(lambda _: self.set_slab(self.slab_box.currentData(),
                                                                          self.slab_mm))
        self.thickness = QSpinBox(minimum=1, maximum=200, value=int(self.slab_mm), suffix=" mm")
        self.thickness.setToolTip("Slab thickness")
        self.thickness.valueChanged.connect(lambda mm: self.set_slab(self.slab_mode, float(mm)))
        self.tilt_slider = QSlider(Qt.Orientation.Horizontal)
        self.tilt_slider.setRange(-60, 60)
        self.tilt_slider.setToolTip("Oblique: tilt the axial plane about the left-right axis")
        self.tilt_slider.valueChanged.connect(lambda degrees: self.set_tilt(float(degrees)))
        self.render_box = QComboBox()
        self.render_box.setToolTip("Volume rendering preset")
        self.render_box.addItems([*RENDER_PRESETS, "MIP"])
        self.render_box.currentTextChanged.connect(self.volume_pane.set_preset)
        for label, widget in (("Window", self.window_box), ("Slab", self.slab_box), ("", self.thickness),
                              ("Tilt", self.tilt_slider), ("3D", self.render_box)):
            if label:
                controls.addWidget(QLabel(label))
            controls.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addLayout(grid, 1)
        self.resize(1000, 800)

    # ------------------------------------------------------------------ state
    def _window_chosen(self, name: str) -> None:
        self.set_window(CT_PRESETS.get(name, self.volume.window))

    def set_window(self, window: Window) -> None:
        self.window = window
        self.refresh()

    def set_slab(self, mode: str, mm: float) -> None:
        self.slab_mode, self.slab_mm = mode, mm
        self.refresh()

    def set_tilt(self, degrees: float) -> None:
        self.tilt = degrees
        self.refresh()

    def slab_slices(self, plane: str) -> int:
        if not self.slab_mode:
            return 1
        dz, dy, dx = self.volume.spacing
        across = {"axial": dz, "coronal": dy, "sagittal": dx}[plane]
        return max(1, round(self.slab_mm / across))

    def move(self, plane: str, steps: int) -> None:  # type: ignore[override]  # not QWidget.move()
        self.cursor[plane] = max(0, min(self.cursor[plane] + steps, self.reslicer.extent(plane) - 1))
        self.refresh()

    def click(self, plane: str, x: float, y: float) -> None:
        """Put the cursor on a point of ``plane``: the other two planes move through it."""
        slices = self.volume.shape[0]
        column, row = round(x), round(y)
        if plane == "axial" and self.tilt:
            # The tilted plane stays where it is (the axial cursor places it); the coronal and
            # sagittal planes move through the clicked point.
            _, at_row, at_column = self.reslicer.oblique_point(self.tilt, self.cursor["axial"], x, y)
            self.cursor["coronal"], self.cursor["sagittal"] = round(at_row), round(at_column)
        elif plane == "axial":
            self.cursor["sagittal"], self.cursor["coronal"] = column, row
        elif plane == "coronal":
            self.cursor["sagittal"], self.cursor["axial"] = column, slices - 1 - row
        elif plane == "sagittal":
            self.cursor["coronal"], self.cursor["axial"] = column, slices - 1 - row
        for name in self.cursor:
            self.cursor[name] = max(0, min(self.cursor[name], self.reslicer.extent(name) - 1))
        self.refresh()

    # ------------------------------------------------------------------ drawing
    def image(self, plane: str) -> np.ndarray:
        """The modality values the pane shows (before the window)."""
        mode = self.slab_mode or "mip"
        if plane == "axial" and self.tilt:
            return self.reslicer.oblique(self.tilt, self.cursor["axial"], self.slab_slices(plane), mode)
        return self.reslicer.slice(plane, self.cursor[plane], self.slab_slices(plane), mode)

    def refresh(self) -> None:
        dz, dy, dx = self.volume.spacing
        slices = self.volume.shape[0]
        c = self.cursor
        layout = {  # pixel spacing, cursor (column, row), the two other planes' colours
            "axial": ((dx, dy), (c["sagittal"], c["coronal"]), ("sagittal", "coronal")),
            "coronal": ((dx, dz), (c["sagittal"], slices - 1 - c["axial"]), ("sagittal", "axial")),
            "sagittal": ((dy, dz), (c["coronal"], slices - 1 - c["axial"]), ("coronal", "axial")),
        }
        for plane, pane in self.panes.items():
            spacing, cursor, others = layout[plane]
            if plane == "axial" and self.tilt:
                spacing = (dx, min(dx, dy, dz))
            pixels = apply_window(self.image(plane), self.window)
            pane.show_image(pixels, spacing, cursor, tuple(CURSOR_COLOUR[o] for o in others))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh()
