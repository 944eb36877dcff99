"""The series strip: thumbnails of the open study's series beside the viewports.

It follows the grid, not the study list: the study is the one the active viewport shows (or any
viewport, when the active one is empty), and the active viewport's series is the one selected.
A click shows a series in the active viewport; a thumbnail dragged onto a viewport shows it
there. Thumbnails are read only while the strip is visible (each reading is an audited access)
and the strip empties with the grid, so at the lock nothing of the patient stays on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QMimeData, QObject, QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem

from app.imaging.thumbnail import THUMBNAIL_SIZE
from app.store.records import SeriesSummary
from app.ui.dragging import SERIES_MIME, series_mime
from app.ui.study_list import pixmap
from app.ui.thumbnails import Thumbnails
from app.vault import Vault

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

UID_ROLE = Qt.ItemDataRole.UserRole
STRIP_WIDTH = THUMBNAIL_SIZE + 36


def label(series: SeriesSummary) -> str:
    number = f"Series {series.number}" if series.number is not None else "Series"
    if series.modality == "KO":  # Key Object Selection documents: the images they select open
        return f"{number}\nKey images"
    return f"{number}\n{series.modality} · {series.instances}" if series.modality else number


class SeriesStrip(QListWidget):
    """A column of series thumbnails, numbers and modalities; the current one highlighted."""

    chosen = Signal(str)  # series UID clicked

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("series-strip")
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.TopToBottom)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setIconSize(QSize(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        self.setGridSize(QSize(STRIP_WIDTH - 8, THUMBNAIL_SIZE + 40))
        self.setFixedWidth(STRIP_WIDTH)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setToolTip("The open study's series: click to show one in the active viewport, or drag it "
                        "onto any viewport")
        self.itemClicked.connect(lambda item: self.chosen.emit(item.data(UID_ROLE)))

    def set_series(self, series: Sequence[SeriesSummary]) -> None:
        self.clear()
        for each in series:
            item = QListWidgetItem(label(each))
            item.setData(UID_ROLE, each.series_uid)
            item.setToolTip(each.description or label(each).replace("\n", " "))
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
            self.addItem(item)

    def set_thumbnails(self, pictures: Mapping[str, np.ndarray]) -> None:
        for n in range(self.count()):
            item = self.item(n)
            picture = pictures.get(item.data(UID_ROLE))
            if picture is not None:
                item.setIcon(QIcon(pixmap(picture)))

    def highlight(self, series_uid: str | None) -> None:
        """Select the thumbnail of ``series_uid`` (none if it is not in the strip)."""
        self.clearSelection()
        for n in range(self.count()):
            item = self.item(n)
            if item.data(UID_ROLE) == series_uid:
                self.setCurrentItem(item)
                self.scrollToItem(item)

    def mimeTypes(self) -> list[str]:
        return [SERIES_MIME]

    def mimeData(self, items: Sequence[QListWidgetItem]) -> QMimeData:
        return series_mime(items[0].data(UID_ROLE))


class StripKeeper(QObject):
    """Keeps the strip to the study the grid shows, and hangs what is chosen on it."""

    def __init__(self, window: MainWindow, vault: Vault, strip: SeriesStrip) -> None:
        super().__init__(window)
        self._window, self._vault, self._strip = window, vault, strip
        self._study: str | None = None
        self.series: list[SeriesSummary] = []  # the open study's, as listed on the strip
        self._thumbnails = Thumbnails(window, vault, study=lambda: self._study, show=strip.set_thumbnails,
                                      delay_ms=0)
        window.grid.activeChanged.connect(lambda _viewport: self.follow())
        window.grid.seriesChanged.connect(self.follow)
        strip.chosen.connect(self._chosen)

    def follow(self, *, again: bool = False) -> None:
        """List the open study's series (``again``: even if it is the one listed) and select the
        active viewport's."""
        window = self._window
        grid = window.grid
        shown = [v.study_uid for v in [grid.active, *grid.visible_viewports()] if v.study_uid]
        study = shown[0] if shown and not window.locked and self._strip.isVisibleTo(window) else None
        if study != self._study or again:
            self._study = study
            self._thumbnails.cancel()
            listed = window.ask(self._vault.reading.series, window.session, study) if study else None
            self.series = listed or []
            self._strip.set_series(self.series)
            if self.series:
                self._thumbnails.request()
        self._strip.highlight(grid.active.series_uid)

    def _chosen(self, series_uid: str) -> None:
        summary = next((s for s in self.series if s.series_uid == series_uid), None)
        active = self._window.grid.active
        if active.series_uid != series_uid and self._window.load_series(series_uid, active, summary):
            active.view.setFocus()
        self._strip.highlight(active.series_uid)
