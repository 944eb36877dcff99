"""The selected patient's timeline: every cached study of the patient, newest first.

The study being read is selected; the prior the window would hang beside it is marked, so the
reader sees at a glance what there is to compare with. A click makes a study current (its
series and thumbnails show below), a double-click or Enter opens it.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from app.imaging.hanging import patient_studies, relevant_prior
from app.store.records import StudySummary
from app.ui.dicom_text import iso_date

UID_ROLE = Qt.ItemDataRole.UserRole
PRIOR_COLOUR = QColor("#f0b44c")  # the theme's warning amber: stands out without alarming
LINES = 3


class PatientTimeline(QListWidget):
    studyChosen = Signal(str)
    studyOpened = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setSpacing(2)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setToolTip("The patient's studies in the cache, newest first: click one to list its "
                        "series, double-click to open it")
        self.setFixedHeight(self.fontMetrics().lineSpacing() * LINES + 28)  # room for the scroll bar
        # The row, not currentItemChanged: that one hands over the previous item, which clear()
        # has already deleted, and wrapping a deleted item crashes.
        self.currentRowChanged.connect(self._current)
        self.itemActivated.connect(lambda item: self.studyOpened.emit(item.data(UID_ROLE)))
        self._prior_uid: str | None = None

    def show_patient(self, current: StudySummary, studies: Iterable[StudySummary]) -> None:
        """The timeline of ``current``'s patient, with ``current`` selected."""
        studies = list(studies)
        prior = relevant_prior(current, studies)
        self._prior_uid = prior.study_uid if prior is not None else None
        with QSignalBlocker(self):
            super().clear()
            for study in patient_studies(current, studies):
                lines = [iso_date(study.study_date) or "no date", " ".join(study.modalities) or "—",
                         study.description]
                item = QListWidgetItem("\n".join(line for line in lines if line))
                item.setData(UID_ROLE, study.study_uid)
                item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
                tip = f"{study.series} series, {study.instances} images"
                if study.study_uid == current.study_uid:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                    tip = f"Current study · {tip}"
                elif prior is not None and study.study_uid == prior.study_uid:
                    item.setForeground(PRIOR_COLOUR)
                    tip = f"Relevant prior, hung beside the current study when it is opened · {tip}"
                item.setToolTip(tip)
                self.addItem(item)
                if study.study_uid == current.study_uid:
                    self.setCurrentItem(item)
        if self.currentItem() is not None:
            self.scrollToItem(self.currentItem())

    def study_uids(self) -> list[str]:
        return [self.item(row).data(UID_ROLE) for row in range(self.count())]

    def prior_uid(self) -> str | None:
        """The study marked as the relevant prior, if any."""
        return self._prior_uid

    def clear(self) -> None:
        self._prior_uid = None
        with QSignalBlocker(self):  # emptying it is no choice of the reader's
            super().clear()

    def _current(self, row: int) -> None:
        if row >= 0:
            self.studyChosen.emit(self.item(row).data(UID_ROLE))
