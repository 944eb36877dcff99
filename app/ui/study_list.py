"""The study list, the patient's timeline of studies, and the series of the selected study.

The tables only display the summaries and thumbnails the vault hands out and report the reader's
choices as UIDs; the main window does the vault calls. A demographic the role may not see arrives
as None and shows as a dash; a restricted patient's hidden name shows as "Restricted patient".
A series row can be dragged onto a viewport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractTableModel,
    QEvent,
    QItemSelectionModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLineEdit,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.imaging.thumbnail import THUMBNAIL_SIZE
from app.store.records import SeriesSummary, StudySummary
from app.ui.dicom_text import iso_date, person_name
from app.ui.dragging import SERIES_MIME, series_mime
from app.ui.image_view import qimage
from app.ui.timeline import PatientTimeline

SORT_ROLE = Qt.ItemDataRole.UserRole
UID_ROLE = Qt.ItemDataRole.UserRole + 1
ROW_HEIGHT = 24
HIDDEN = "—"
RESTRICTED = "Restricted patient"
WARNING_COLOUR = QColor(230, 120, 0)

ModelIndex = QModelIndex | QPersistentModelIndex


def shown(value: str | None, text: Callable[[str], str] = str) -> str:
    return HIDDEN if value is None else text(value)


def pixmap(pixels: np.ndarray) -> QPixmap:
    """Display-ready 8-bit pixels as a pixmap (a copy: the array may go)."""
    return QPixmap.fromImage(qimage(np.ascontiguousarray(pixels)))


IDENTITY_CONFLICT = ("Another patient record has this Patient ID with a different name or birth date. "
                     "Check both before reading; someone who may import can reconcile them.")


def patient_text(study: StudySummary) -> str:
    if study.patient_name is None and study.restricted:
        return RESTRICTED
    name = shown(study.patient_name, person_name)
    return f"\u26a0 {name}" if study.identity_conflict else name


def identity_warning(study: StudySummary) -> str:
    return IDENTITY_CONFLICT if study.identity_conflict else ""


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[Any], str]
    key: Callable[[Any], object]
    tip: str = ""
    numeric: bool = False
    stretch: bool = False  # takes the width left over
    # when the table is too narrow for all: 0 never gives up width, else the columns of stage 1 give
    # up theirs first (text elided), then those of stage 2; a stretching column is of stage 1 unless set
    shrink: int = 0
    warning: Callable[[Any], str] = lambda _: ""  # a record's warning: its tooltip, in the warning colour

    @property
    def stage(self) -> int:
        return self.shrink or (1 if self.stretch else 0)


class RecordTableModel(QAbstractTableModel):
    """Read-only rows of frozen vault records; each column gives display text and a sort key."""

    columns: Sequence[Column] = ()

    def __init__(self, uid: Callable[[Any], str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._uid = uid
        self._records: list[Any] = []

    def set_records(self, records: Sequence[Any]) -> None:
        self.beginResetModel()
        self._records = list(records)
        self.endResetModel()

    @property
    def records(self) -> tuple[Any, ...]:
        return tuple(self._records)

    def row_of(self, uid: str) -> int | None:
        return next((row for row, r in enumerate(self._records) if self._uid(r) == uid), None)

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        record, column = self._records[index.row()], self.columns[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return column.warning(record) or column.text(record)
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(record)
        if role == Qt.ItemDataRole.ForegroundRole and column.warning(record):
            return WARNING_COLOUR
        if role == SORT_ROLE:
            return column.key(record)
        if role == UID_ROLE:
            return self._uid(record)
        if role == Qt.ItemDataRole.TextAlignmentRole and column.numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.columns[section].tip or None
        return None


class StudyTableModel(RecordTableModel):
    # Short headers keep the list narrow beside the images; the tooltips say them in full.
    columns = (
        Column("Patient", patient_text, lambda s: patient_text(s).casefold(), "Patient name",
               shrink=1, warning=identity_warning),
        Column("ID", lambda s: shown(s.patient_id), lambda s: s.patient_id or "", "Patient ID", shrink=2),
        Column("Born", lambda s: shown(s.birth_date, iso_date), lambda s: s.birth_date or "",
               "Patient's birth date"),
        Column("Date", lambda s: iso_date(s.study_date), lambda s: s.study_date, "Study date"),
        Column("Mod.", lambda s: ", ".join(s.modalities), lambda s: ", ".join(s.modalities),
               "Modalities in the study", shrink=3),  # ("CT, PR, SR, KO" is long; the last to give)
        Column("Description", lambda s: s.description, lambda s: s.description.casefold(),
               "Study description", stretch=True),
        Column("Images", lambda s: str(s.instances), lambda s: s.instances,
               "Instances (stored images) in the study", numeric=True),
    )

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(lambda s: s.study_uid, parent)


class SeriesTableModel(RecordTableModel):
    columns = (
        Column("#", lambda s: "" if s.number is None else str(s.number), lambda s: s.number or 0,
               "Series number", numeric=True),
        Column("Mod.", lambda s: s.modality, lambda s: s.modality, "Modality"),
        Column("Description", lambda s: s.description, lambda s: s.description, "Series description",
               stretch=True),
        Column("Images", lambda s: str(s.instances), lambda s: s.instances,
               "Instances (stored images) in the series", numeric=True),
    )

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(lambda s: s.series_uid, parent)
        self._pictures: dict[str, QPixmap] = {}

    def set_records(self, records: Sequence[Any]) -> None:
        self._pictures = {}  # another study's series
        super().set_records(records)

    def set_thumbnails(self, pictures: Mapping[str, QPixmap]) -> None:
        self._pictures = dict(pictures)
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, 0),
                                  [Qt.ItemDataRole.DecorationRole])

    def thumbnail(self, series_uid: str) -> QPixmap | None:
        return self._pictures.get(series_uid)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if role == Qt.ItemDataRole.DecorationRole and index.isValid() and index.column() == 0:
            return self._pictures.get(self._uid(self._records[index.row()]))
        return super().data(index, role)

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        flags = super().flags(index)
        return flags | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else flags

    def mimeTypes(self) -> list[str]:
        return [SERIES_MIME]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        return series_mime(indexes[0].data(UID_ROLE))


def fitted_widths(wanted: Sequence[int], least: Sequence[int], columns: Sequence[Column],
                  room: int) -> list[int]:
    """Column widths that fill ``room``: each column its content's width and the stretching ones
    the rest; when that is too wide, the shrinking columns give up width stage by stage, each in
    proportion to what it can spare above ``least`` (its title)."""
    widths = list(wanted)
    spare = room - sum(widths)
    if spare >= 0:
        stretching = sum(c.stretch for c in columns) or 1
        return [w + (spare // stretching if c.stretch else 0) for w, c in zip(widths, columns, strict=True)]
    for stage in sorted({c.stage for c in columns} - {0}):
        members = [i for i, c in enumerate(columns) if c.stage == stage]
        slack = {i: max(widths[i] - least[i], 0) for i in members}
        given = min(sum(widths) - room, sum(slack.values()))
        for i in members:
            widths[i] -= -(-given * slack[i] // max(sum(slack.values()), 1))  # rounded up: it fits
        if sum(widths) <= room:
            break
    return widths


class RecordTable(QTableView):
    """A table whose columns always fit its width: never a sideways scroll that hides the
    description; long text is elided and its tooltip gives it in full."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__()
        self._columns = columns
        self.horizontalHeader().sortIndicatorChanged.connect(self.resizeColumnsToContents)

    def titles_width(self) -> list[int]:
        """Each column's title width: only the sorted column's has room for the sort arrow (Qt's
        hint gives every title that room, which alone can be wider than the list)."""
        header, sections = self.horizontalHeader(), range(len(self._columns))
        arrowed = [header.sectionSizeHint(i) for i in sections]
        if not header.isSortIndicatorShown() or header.sortIndicatorSection() not in sections:
            return arrowed
        header.setSortIndicatorShown(False)
        plain = [header.sectionSizeHint(i) for i in sections]
        header.setSortIndicatorShown(True)
        plain[header.sortIndicatorSection()] = arrowed[header.sortIndicatorSection()]
        return plain

    def resizeColumnsToContents(self) -> None:
        """Size the columns to their content within the table's width (records or width changed)."""
        header = self.horizontalHeader()
        least = self.titles_width()
        wanted = [max(low, self.sizeHintForColumn(i)) for i, low in enumerate(least)]
        for section, width in enumerate(fitted_widths(wanted, least, self._columns,
                                                      self.viewport().width())):
            header.resizeSection(section, width)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:  # the window, the splitter or a scroll bar came or went
            self.resizeColumnsToContents()
        return super().viewportEvent(event)


def record_table(model: QAbstractItemModel, columns: Sequence[Column], tip: str) -> RecordTable:
    table = RecordTable(columns)
    table.setModel(model)
    table.setToolTip(tip)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setAlternatingRowColors(True)
    table.setShowGrid(False)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideRight)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
    header = table.horizontalHeader()
    header.setHighlightSections(False)
    header.setStretchLastSection(False)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)  # widths: resizeColumnsToContents
    return table


class StudyBrowser(QWidget):
    """Filterable, sortable study table; below it the selected patient's timeline of studies and
    the series of the current study, with thumbnails once the window has them."""

    studySelected = Signal(str)
    studyOpened = Signal(str)
    seriesSelected = Signal(str)
    seriesOpened = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter studies")
        self.filter_edit.setToolTip("Show only studies whose name, ID, birth date, date, modality or "
                                    "description contains this text")
        self.filter_edit.setClearButtonEnabled(True)

        self.study_model = StudyTableModel(self)
        self._proxy = QSortFilterProxyModel(self)
        self._proxy.setSourceModel(self.study_model)
        self._proxy.setSortRole(SORT_ROLE)
        self._proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._proxy.setFilterKeyColumn(-1)
        self.study_table = record_table(self._proxy, StudyTableModel.columns,
                                  "Studies in the local cache: select to list the series, "
                                  "double-click or Enter to open")
        self.study_table.setSortingEnabled(True)
        date_column = [column.title for column in StudyTableModel.columns].index("Date")
        self.study_table.sortByColumn(date_column, Qt.SortOrder.DescendingOrder)

        self.timeline = PatientTimeline()
        self.series_model = SeriesTableModel(self)
        self.series_table = record_table(self.series_model, SeriesTableModel.columns,
                                   "Series of the selected study: select or double-click to show "
                                   "in the active viewport, or drag onto any viewport")
        self.series_table.setIconSize(QSize(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        self.series_table.setDragEnabled(True)
        self.series_table.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)

        below = QWidget()
        column = QVBoxLayout(below)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        column.addWidget(self.timeline)
        column.addWidget(self.series_table, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.study_table)
        splitter.addWidget(below)
        splitter.setChildrenCollapsible(False)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 0, 4)
        layout.setSpacing(4)
        layout.addWidget(self.filter_edit)
        layout.addWidget(splitter)

        self.filter_edit.textChanged.connect(self._proxy.setFilterFixedString)
        self.study_table.selectionModel().currentRowChanged.connect(self._study_current)
        self.study_table.activated.connect(lambda index: self.studyOpened.emit(index.data(UID_ROLE)))
        self.series_table.selectionModel().currentRowChanged.connect(self._series_current)
        self.series_table.activated.connect(lambda index: self.seriesOpened.emit(index.data(UID_ROLE)))
        self.timeline.studyChosen.connect(self.select_study)
        self.timeline.studyOpened.connect(self.studyOpened.emit)

    def current_study_uid(self) -> str | None:
        index = self.study_table.currentIndex()
        return index.data(UID_ROLE) if index.isValid() else None

    def clear(self) -> None:
        """Empty the tables, the timeline and the filter."""
        self.filter_edit.clear()
        self.set_studies([])
        self.set_series([])

    def set_studies(self, studies: Sequence[StudySummary]) -> None:
        self.timeline.clear()  # filled again when a study is made current
        self.study_model.set_records(studies)
        self.study_table.resizeColumnsToContents()

    def set_series(self, series: Sequence[SeriesSummary]) -> None:
        self.series_model.set_records(series)
        self.series_table.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
        self.series_table.resizeColumnsToContents()

    def set_thumbnails(self, pictures: Mapping[str, np.ndarray]) -> None:
        """Show each series' thumbnail (display-ready pixels by series UID) beside its number."""
        self.series_model.set_thumbnails({uid: pixmap(p) for uid, p in pictures.items()})
        if pictures:
            self.series_table.verticalHeader().setDefaultSectionSize(THUMBNAIL_SIZE + 4)
        self.series_table.resizeColumnsToContents()

    def select_study(self, study_uid: str) -> bool:
        """Make ``study_uid`` the current study (clearing a filter that hides it)."""
        row = self.study_model.row_of(study_uid)
        if row is None:
            return False
        index = self._proxy.mapFromSource(self.study_model.index(row, 0))
        if not index.isValid():
            self.filter_edit.clear()
            index = self._proxy.mapFromSource(self.study_model.index(row, 0))
        self._make_current(self.study_table, index)
        return True

    def select_series(self, series_uid: str | None) -> None:
        """Mark the series a viewport shows; a series of another study clears the mark."""
        row = None if series_uid is None else self.series_model.row_of(series_uid)
        if row is None:
            self.series_table.selectionModel().clear()
        else:
            self._make_current(self.series_table, self.series_model.index(row, 0))

    @staticmethod
    def _make_current(table: QTableView, index: QModelIndex) -> None:
        flags = (QItemSelectionModel.SelectionFlag.ClearAndSelect
                 | QItemSelectionModel.SelectionFlag.Rows)
        table.selectionModel().setCurrentIndex(index, flags)
        table.scrollTo(index)

    def _study_current(self, current: QModelIndex, previous: QModelIndex) -> None:
        if not current.isValid():
            self.timeline.clear()
            return
        uid = current.data(UID_ROLE)
        studies = self.study_model.records
        study = next(s for s in studies if s.study_uid == uid)
        self.timeline.show_patient(study, studies)
        self.studySelected.emit(uid)

    def _series_current(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid():
            self.seriesSelected.emit(current.data(UID_ROLE))
