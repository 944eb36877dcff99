"""The viewport grid: 1×1, 1×2, 2×2, 2×3 or 3×3 image views, one of them active.

Each cell remembers which series and patient it shows, so the window can hang series into the
right cell and never leave another patient's images next to the ones just opened. At the lock
the grid drops every pixel and keeps only a :class:`GridState` to show the same views again.

Scrolling is synchronised between cells showing parallel slices of the same patient: by patient
position when they share a frame of reference, else keeping the table-position offset they had
when synchronisation began. The active cell's slice is drawn as a reference line in the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QGridLayout, QVBoxLayout, QWidget

from app.imaging.display import Window
from app.imaging.geometry import reference_line
from app.imaging.hanging import LAYOUTS, MAX_COLUMNS, MAX_ROWS
from app.imaging.measure import Measurement
from app.imaging.series import SeriesImages
from app.ui.dragging import dragged_series
from app.ui.image_view import ImageView

ACTIVE_FRAME = QColor(61, 142, 230)
GRID_GAP = QColor(24, 25, 27)


@dataclass(frozen=True)
class ViewState:
    """What a viewport showed, without a pixel of it."""

    series_uid: str
    study_uid: str | None
    index: int
    window: Window | None  # the reader's own window; None: the series default


@dataclass(frozen=True)
class GridState:
    layout: str
    active: int
    views: tuple[ViewState | None, ...]  # one per viewport, shown or not


class Viewport(QWidget):
    """An :class:`ImageView` in a one-pixel frame that lights up while the cell is active; a
    series dragged from the series list may be dropped on it."""

    dropped = Signal(str)  # series UID
    changed = Signal()  # it shows another series, or none

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.view = ImageView(self)
        self.series_uid: str | None = None
        self.study_uid: str | None = None
        self.patient_key: int | None = None  # the vault's "same patient" number, not a demographic
        self._highlight = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.addWidget(self.view)
        self.view.failed.connect(self._forget)

    def show_series(self, series_uid: str, study_uid: str | None, patient_key: int | None,
                    images: SeriesImages, measurements: list[Measurement] | None = None) -> None:
        self.series_uid, self.study_uid, self.patient_key = series_uid, study_uid, patient_key
        self.view.set_series(images, measurements)
        self.changed.emit()

    def state(self) -> ViewState | None:
        if self.series_uid is None:
            return None
        return ViewState(self.series_uid, self.study_uid, self.view.index, self.view.chosen_window)

    def clear(self) -> None:
        self._forget()
        self.view.set_series(None)
        self.view.set_corner_text([], [])

    def set_highlight(self, on: bool) -> None:
        self._highlight = on
        self.update()

    def _forget(self) -> None:
        self.series_uid = self.study_uid = self.patient_key = None
        self.changed.emit()

    def paintEvent(self, event: QPaintEvent) -> None:
        QPainter(self).fillRect(self.rect(), ACTIVE_FRAME if self._highlight else Qt.GlobalColor.black)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dragged_series(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        series_uid = dragged_series(event.mimeData())
        if series_uid is not None:
            event.acceptProposedAction()
            self.dropped.emit(series_uid)


class ViewportGrid(QWidget):
    """Nine viewports, of which the layout shows the first one, two, four, six or nine."""

    activeChanged = Signal(object)  # Viewport
    failed = Signal(str)
    measured = Signal(object, object)  # Viewport, Measurement
    measurementRemoved = Signal(object, object)  # Viewport, Measurement
    seriesDropped = Signal(object, str)  # Viewport, series UID
    seriesChanged = Signal()  # a viewport shows another series, or none

    def __init__(self, layout: str = "1x1", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewports = [Viewport(self) for _ in range(MAX_ROWS * MAX_COLUMNS)]
        self._active = self.viewports[0]
        self._layout_name = ""
        self._sync = True
        self._offsets: dict[tuple[int, int], float] = {}  # (from, to) cell: mm along the normal
        self._shown: dict[int, tuple[SeriesImages | None, int]] = {}  # cell: series, index last shown
        self._syncing = False
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(2)
        for viewport in self.viewports:
            viewport.view.activated.connect(partial(self.set_active, viewport))
            viewport.view.failed.connect(self.failed.emit)
            viewport.view.indexChanged.connect(partial(self._scrolled, viewport))
            viewport.view.measured.connect(partial(self.measured.emit, viewport))
            viewport.view.measurementRemoved.connect(partial(self.measurementRemoved.emit, viewport))
            viewport.dropped.connect(partial(self.seriesDropped.emit, viewport))
            viewport.changed.connect(self.seriesChanged.emit)
        self.set_layout(layout)

    @property
    def layout_name(self) -> str:
        return self._layout_name

    @property
    def active(self) -> Viewport:
        return self._active

    def visible_viewports(self) -> list[Viewport]:
        rows, cols = LAYOUTS[self._layout_name]
        return self.viewports[: rows * cols]

    def set_layout(self, name: str) -> None:
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}")
        self._layout_name = name
        rows, cols = LAYOUTS[name]
        for i, viewport in enumerate(self.viewports):
            self._grid.removeWidget(viewport)
            if i < rows * cols:
                self._grid.addWidget(viewport, i // cols, i % cols)
                viewport.show()
            else:
                viewport.hide()
        for i in range(MAX_ROWS):
            self._grid.setRowStretch(i, 1 if i < rows else 0)
        for i in range(MAX_COLUMNS):
            self._grid.setColumnStretch(i, 1 if i < cols else 0)
        visible = self.visible_viewports()
        self.set_active(self._active if self._active in visible else visible[0])

    def blank(self) -> GridState:
        """Drop every image and return what the viewports showed."""
        state = GridState(self._layout_name, self.viewports.index(self._active),
                          tuple(viewport.state() for viewport in self.viewports))
        for viewport in self.viewports:
            viewport.clear()
        return state

    def set_active(self, viewport: Viewport) -> None:
        changed = viewport is not self._active
        self._active = viewport
        several = len(self.visible_viewports()) > 1
        for each in self.viewports:
            each.set_highlight(several and each is viewport)
        if changed:
            self._update_reference_lines()
            self.activeChanged.emit(viewport)

    # ------------------------------------------------------------------ synchronised scrolling
    def set_synchronised(self, on: bool) -> None:
        """Turn synchronised scrolling on (keeping the slices now shown side by side) or off."""
        self._sync = on
        self._offsets.clear()
        self._update_reference_lines()

    def _partners(self, viewport: Viewport) -> list[Viewport]:
        return [v for v in self.visible_viewports() if v is not viewport and v.series_uid
                and v.view.series is not None and v.patient_key == viewport.patient_key]

    def _offset(self, source: Viewport, target: Viewport) -> float:
        """0 within one frame of reference; else the offset the two slices had when scrolling
        began (both as last shown), kept from then on."""
        a, b = source.view.series, target.view.series
        if a is None or b is None:
            return 0.0
        if a.frame_of_reference and a.frame_of_reference == b.frame_of_reference:
            return 0.0
        key = (id(source), id(target))
        if key not in self._offsets:
            pa = a.plane(self._shown.get(id(source), (None, source.view.index))[1])
            pb = b.plane(target.view.index)
            if pa is None or pb is None:
                return 0.0
            shift = float((pb.origin - pa.origin) @ pa.normal)
            self._offsets[key] = shift
            self._offsets[key[::-1]] = -shift
        return self._offsets[key]

    def _scrolled(self, viewport: Viewport, index: int) -> None:
        if self._syncing:
            return
        series = viewport.view.series
        before = self._shown.get(id(viewport))
        self._shown[id(viewport)] = (series, index)
        if series is None:
            return
        if before is None or before[0] is not series or viewport is not self._active:
            # A new series, or a partner moved on its own: pair it afresh on the next scroll.
            self._offsets = {k: v for k, v in self._offsets.items() if id(viewport) not in k}
        elif self._sync:
            self._shown[id(viewport)] = before  # the pairing is taken from where it was
            plane = series.plane(index)
            self._syncing = True
            try:
                for other in self._partners(viewport) if plane is not None else []:
                    partner = other.view.series
                    if partner is None or plane is None:  # (never: partners show a series)
                        continue
                    match = partner.matching_index(plane, self._offset(viewport, other))
                    if match is not None:
                        other.view.set_index(match)
                        self._shown[id(other)] = (other.view.series, other.view.index)
            finally:
                self._syncing = False
                self._shown[id(viewport)] = (series, index)
        self._update_reference_lines()

    def _update_reference_lines(self) -> None:
        """The active cell's slice, drawn where it cuts the other cells' images."""
        active = self._active
        series = active.view.series
        plane = series.plane(active.view.index) if series is not None else None
        for viewport in self.viewports:
            lines = []
            if viewport is not active and plane is not None and viewport in self._partners(active):
                shown = viewport.view.series  # (a partner's is never None)
                own = shown.plane(viewport.view.index) if shown is not None else None
                line = reference_line(own, plane) if own is not None else None
                if line is not None:
                    lines.append(line)
            viewport.view.set_reference_lines(lines)

    def paintEvent(self, event: QPaintEvent) -> None:
        QPainter(self).fillRect(self.rect(), GRID_GAP)
