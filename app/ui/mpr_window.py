"""MPR and 3D: axial, coronal and sagittal planes with linked cursors, thick slabs, an oblique
tilt, and volume rendering.

The window opens at once with the volume's loading progress; the slices are decoded in the
background, and the three planes are drawn as soon as the volume is in memory (numpy images
painted by Qt, :mod:`app.ui.mpr_plane`: no OpenGL). Only then does the volume rendering start,
on a thread of its own (:mod:`app.ui.mpr_volume`), so the reader works on the planes while it
is built. Neither VTK's reslicing nor its rendering is imported on the GUI thread before the
planes are up. ``CUSTODIAN_TRACE`` (:mod:`app.trace`) records these moments.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication, QKeySequence, QPaintEvent, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import trace
from app.imaging.display import CT_PRESETS, Window
from app.imaging.volume import PLANES, SLABS, Progress, VolumePlan, fill_volume
from app.ui.bridge import Bridge, in_background
from app.ui.mpr_plane import SLAB_LABELS, PlanePane
from app.ui.mpr_volume import PRESETS, VolumePane

if TYPE_CHECKING:
    from app.imaging.mpr import MprState
    from app.imaging.series import SeriesImages

PROGRESS_STEPS = 50  # at most this many progress updates while the volume loads


def display_available() -> bool:
    return QGuiApplication.platformName() not in ("offscreen", "minimal")


class MprWindow(QWidget):
    """Three linked planes and a 3D view of the volume ``plan`` describes, decoded from ``series``."""

    planes_shown = Signal()  # the three planes are on screen for the first time

    def __init__(self, series: SeriesImages, plan: VolumePlan, title: str = "3D / MPR",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        trace.mark("mpr.window", slices=plan.count)
        self.setWindowTitle(title)
        self.state: MprState | None = None
        self.voi_window = self.default_window = plan.window
        self.panes = {plane: PlanePane(plane, self) for plane in PLANES}
        self.volume_pane = VolumePane(self)
        self._unpainted = set(PLANES)
        self._progress_painted = self._render_painted = False
        self._stop = threading.Event()
        self.progress = QProgressBar(maximum=plan.count, value=0,
                                     format=f"Loading {plan.count} slices for 3D: %p%")
        self.controls = self._controls()
        self.controls.setEnabled(False)
        grid = QGridLayout()
        grid.setSpacing(2)
        for pane, (r, c) in zip([*self.panes.values(), self.volume_pane], [(0, 0), (0, 1), (1, 0), (1, 1)],
                                strict=True):
            grid.addWidget(pane, r, c)
        for plane, pane in self.panes.items():
            pane.clicked.connect(lambda x, y, plane=plane: self.click(plane, x, y))
            pane.scrolled.connect(lambda steps, plane=plane: self.step(plane, steps))
            pane.windowed.connect(self.set_window)
            pane.painted.connect(lambda plane=plane: self._painted(plane))
        self.volume_pane.rendered.connect(self._rendered)
        layout = QVBoxLayout(self)
        layout.addWidget(self.controls)
        layout.addWidget(self.progress)
        layout.addLayout(grid, 1)
        for keys, slot in (("Esc", self.close), ("Ctrl+W", self.close), ("Ctrl+H", self.toggle_annotations)):
            QShortcut(QKeySequence(keys), self, slot)
        self.resize(1000, 800)
        self._loaded = Bridge(self._volume_loaded, self)
        self._progressed = Bridge(self.progress.setValue, self)
        step = max(1, plan.count // PROGRESS_STEPS)

        def progress(done: int) -> bool:  # on the decoding threads
            if done % step == 0 or done == plan.count:
                self._progressed.post(done)
            return not self._stop.is_set()

        in_background("mpr-volume", lambda: _prepare(series, plan, progress),
                      lambda state, error: self._loaded.post(state, error))

    def _controls(self) -> QWidget:
        self.window_box = QComboBox()
        self.window_box.setToolTip("Window preset")
        self.window_box.addItems(["Series default", *CT_PRESETS])
        self.window_box.currentTextChanged.connect(
            lambda name: self.set_window(CT_PRESETS.get(name, self.default_window)))
        self.slab_box = QComboBox()
        self.slab_box.setToolTip("Thick slab: maximum, minimum or average intensity")
        self.slab_box.addItem("Single slice", "")
        for mode in SLABS:
            self.slab_box.addItem(SLAB_LABELS[mode], mode)
        self.thickness = QSpinBox(minimum=1, maximum=200, value=10, suffix=" mm")
        self.thickness.setToolTip("Slab thickness")
        self.slab_box.currentIndexChanged.connect(
            lambda _: self.set_slab(self.slab_box.currentData(), float(self.thickness.value())))
        self.thickness.valueChanged.connect(lambda mm: self.set_slab(self.slab_box.currentData(), float(mm)))
        self.tilt_slider = QSlider(Qt.Orientation.Horizontal)
        self.tilt_slider.setRange(-60, 60)
        self.tilt_slider.setToolTip("Oblique: tilt the axial plane about the left-right axis")
        self.tilt_slider.valueChanged.connect(lambda degrees: self.set_tilt(float(degrees)))
        self.render_box = QComboBox()
        self.render_box.setToolTip("Volume rendering preset")
        self.render_box.addItems(PRESETS)
        self.render_box.currentTextChanged.connect(self.volume_pane.set_preset)
        controls = QWidget()
        row = QHBoxLayout(controls)
        row.setContentsMargins(0, 0, 0, 0)
        for label, widget in (("Window", self.window_box), ("Slab", self.slab_box), ("", self.thickness),
                              ("Tilt", self.tilt_slider), ("3D", self.render_box)):
            if label:
                row.addWidget(QLabel(label))
            row.addWidget(widget)
        return controls

    # ------------------------------------------------------------------ loading
    def _volume_loaded(self, state: MprState | None, error: str | None) -> None:
        if self._stop.is_set():
            return  # closed meanwhile
        self.progress.hide()
        if state is None:
            for pane in self.panes.values():
                pane.clear(f"3D could not be built: {error}")
            self.volume_pane.message = ""
            self.volume_pane.update()
            return
        trace.mark("mpr.volume", slices=state.volume.shape[0])
        self.state = state
        self.controls.setEnabled(True)
        self.refresh()

    def _painted(self, plane: str) -> None:
        if not self._unpainted:
            return
        self._unpainted.discard(plane)
        if not self._unpainted:
            trace.mark("mpr.planes")
            self.planes_shown.emit()
            QTimer.singleShot(0, self._start_3d)  # after this paint, not inside it

    def _start_3d(self) -> None:
        if self.state is None:
            return
        if display_available():
            self.volume_pane.start(self.state.volume)
        else:
            self.volume_pane.message = "3D rendering needs a display; the planes do not."
            self.volume_pane.update()

    def _rendered(self, preset: str) -> None:
        if not self._render_painted:
            self._render_painted = True
            trace.mark("mpr.render")

    def showEvent(self, event: QShowEvent) -> None:
        """Take the keyboard from the reading window (Esc and Ctrl+W close this one)."""
        super().showEvent(event)
        self.raise_()
        self.activateWindow()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self._progress_painted:
            self._progress_painted = True
            trace.mark("mpr.progress")

    # ------------------------------------------------------------------ state
    def set_window(self, window: Window) -> None:
        self.voi_window = window
        for pane in self.panes.values():
            pane.set_window(window)

    def set_slab(self, mode: str, mm: float) -> None:
        if self.state is not None:
            self.state.slab_mode, self.state.slab_mm = mode, mm
            self.refresh()

    def set_tilt(self, degrees: float) -> None:
        if self.state is not None:
            self.state.tilt = degrees
            self.refresh()

    def step(self, plane: str, steps: int) -> None:
        if self.state is not None:
            self.state.move(plane, steps)
            self.refresh()

    def click(self, plane: str, x: float, y: float) -> None:
        """Put the cursor on a point of ``plane``: the other two planes move through it."""
        if self.state is not None:
            self.state.click(plane, x, y)
            self.refresh()

    def toggle_annotations(self) -> None:
        for pane in self.panes.values():
            pane.set_annotations(not pane.annotations)

    def refresh(self) -> None:
        if self.state is not None:
            for plane, pane in self.panes.items():
                pane.show_view(self.state.view(plane), self.voi_window)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop the loading and the rendering and let the volume go (the window may be reopened
        only through Ctrl+M, which builds it again)."""
        self._stop.set()
        self.volume_pane.stop()
        self.state = None
        for pane in self.panes.values():
            pane.clear("")
        super().closeEvent(event)


def _prepare(series: SeriesImages, plan: VolumePlan, progress: Progress) -> MprState:
    """The volume and its planes' state, on a worker thread; VTK's reslicing is imported on another
    meanwhile (a third of a second, about what 300 slices take to decode)."""
    importing = threading.Thread(target=importlib.import_module, args=("app.imaging.mpr",), daemon=True)
    importing.start()
    volume = fill_volume(series, plan, progress=progress)
    importing.join()
    from app.imaging.mpr import MprState

    return MprState(volume)
