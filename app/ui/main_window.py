"""The main window: study and series lists on the left, the viewport grid on the right.

Every vault call goes through :meth:`MainWindow._ask`, which turns a ``CustodianError`` into its
plain message for the reader; the window itself never touches files or the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox, QSplitter, QToolBar, QWidget

from app.errors import CustodianError
from app.imaging.hanging import relevant_prior
from app.security.sessions import Session
from app.store.records import SeriesSummary, StudySummary
from app.store.vault import Vault
from app.ui.image_view import CONTROLS_HELP
from app.ui.study_list import StudyBrowser, iso_date
from app.ui.viewport_grid import Viewport, ViewportGrid

T = TypeVar("T")

LAYOUT_SHORTCUTS = {"1x1": "Ctrl+1", "1x2": "Ctrl+2", "2x2": "Ctrl+4"}
STATUS_SECONDS = 8


def _count(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


class MainWindow(QMainWindow):
    """The reading window of one session; the title names the user, never a patient."""

    def __init__(self, vault: Vault, session: Session, *, layout: str = "1x1", quiet: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._session = session
        self._quiet = quiet  # no modal boxes (screenshots): errors are only collected
        self.errors: list[str] = []
        self._studies: dict[str, StudySummary] = {}
        self._series: list[SeriesSummary] = []
        self._listed_study: str | None = None

        self.setWindowTitle(f"Custodian — {session.user.name} ({session.user.role.value})")
        self.browser = StudyBrowser()
        self.grid = ViewportGrid(layout)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.browser)
        splitter.addWidget(self.grid)
        splitter.setChildrenCollapsible(False)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([480, 800])
        self.setCentralWidget(splitter)
        self.resize(1280, 800)

        self.layout_actions = self._build_actions()
        self.layout_actions[layout].setChecked(True)
        self.statusBar().setSizeGripEnabled(False)

        self.browser.studySelected.connect(self._list_series)
        self.browser.studyOpened.connect(self.open_study)
        self.browser.seriesSelected.connect(self._series_chosen)
        self.browser.seriesOpened.connect(self._series_chosen)
        self.grid.activeChanged.connect(self._viewport_activated)
        self.grid.failed.connect(self.show_error)

    # ------------------------------------------------------------------ actions
    def _build_actions(self) -> dict[str, QAction]:
        refresh = QAction("&Refresh study list", self, shortcut=QKeySequence("F5"),
                          toolTip="Reload the study list from the vault (F5)")
        refresh.triggered.connect(self.refresh)
        quit_ = QAction("&Quit", self, shortcut=QKeySequence("Ctrl+Q"), toolTip="Quit Custodian (Ctrl+Q)")
        quit_.triggered.connect(self.close)
        reset = QAction("Reset &window", self,
                        toolTip="Reset the active viewport's window to the series default (R in a viewport)")
        reset.triggered.connect(lambda: self.grid.active.view.reset_window())
        controls = QAction("Viewer &controls", self, shortcut=QKeySequence("F1"),
                           toolTip="Mouse and keyboard controls of the viewports (F1)")
        controls.triggered.connect(self._show_controls)

        group = QActionGroup(self)
        layouts: dict[str, QAction] = {}
        for name, shortcut in LAYOUT_SHORTCUTS.items():
            label = name.replace("x", "×")
            action = QAction(label, group, checkable=True, shortcut=QKeySequence(shortcut),
                             toolTip=f"{label} viewport layout ({shortcut})")
            action.triggered.connect(lambda _=False, name=name: self.set_layout(name))
            layouts[name] = action

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(refresh)
        file_menu.addSeparator()
        file_menu.addAction(quit_)
        view_menu = self.menuBar().addMenu("&View")
        layout_menu = view_menu.addMenu("&Layout")
        layout_menu.addActions(list(layouts.values()))
        view_menu.addAction(reset)
        self.menuBar().addMenu("&Help").addAction(controls)

        toolbar = QToolBar("Viewer")
        toolbar.setObjectName("viewer-toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        toolbar.addAction(refresh)
        toolbar.addSeparator()
        toolbar.addActions(list(layouts.values()))
        toolbar.addSeparator()
        toolbar.addAction(reset)
        self.addToolBar(toolbar)
        refresh.setIconText("Refresh")
        reset.setIconText("Reset W/L")
        return layouts

    # ------------------------------------------------------------------ public API
    def refresh(self) -> None:
        """Reload the study list, keeping the current study selected when it is still there."""
        studies = self._ask(self._vault.studies, self._session)
        if studies is None:
            return
        current = self.browser.current_study_uid()
        self._studies = {s.study_uid: s for s in studies}
        self.browser.set_studies(studies)
        self._listed_study = None
        if current in self._studies:
            self.browser.select_study(current)
        else:
            self.browser.set_series([])
        self.statusBar().showMessage(f"{_count(len(studies), 'study', 'studies')} in the local cache",
                                     STATUS_SECONDS * 1000)

    def open_study(self, study_uid: str) -> bool:
        """Select the study and hang its series, in order, into the visible viewports; viewports
        left over show the most relevant prior of the same patient."""
        if not self.browser.select_study(study_uid):
            self.show_error("This study is not in the study list.")
            return False
        self._list_series(study_uid)  # already done by the selection unless that failed before
        if self._listed_study != study_uid:
            return False  # listing its series failed and was reported
        viewports = self.grid.visible_viewports()
        hung = list(zip(viewports, self._series, strict=False))
        spare = viewports[len(hung):]
        prior = relevant_prior(self._studies[study_uid], self._studies.values()) if spare else None
        if prior is not None:
            prior_series = self._ask(self._vault.series, self._session, prior.study_uid) or []
            hung += list(zip(spare, prior_series, strict=False))
        for viewport, series in hung:
            self.load_series(series.series_uid, viewport, series)
        for viewport in viewports[len(hung):]:
            viewport.clear()
        self.grid.set_active(viewports[0])
        viewports[0].view.setFocus()
        self.browser.select_series(viewports[0].series_uid)
        return True

    def load_series(self, series_uid: str, viewport: Viewport | None = None,
                    summary: SeriesSummary | None = None) -> bool:
        """Show a series in ``viewport`` (the active one by default)."""
        images = self._ask(self._vault.open_series, self._session, series_uid)
        if images is None:
            return False
        summary = summary or next((s for s in self._series if s.series_uid == series_uid), None)
        study = self._studies.get(summary.study_uid) if summary else None
        patient_id = study.patient_id if study else None
        target = viewport or self.grid.active
        target.show_series(series_uid, patient_id, images)
        if target.series_uid is None:
            return False  # its first image could not be shown; the view reported why
        others = [v for v in self.grid.viewports
                  if v is not target and v.series_uid and v.patient_id != patient_id]
        for other in others:  # never leave another patient's images beside this one
            other.clear()
        if summary is not None:
            parts = [f"Series {summary.number}" if summary.number is not None else "Series",
                     summary.modality, summary.description, _count(len(images), "image")]
            message = " · ".join(p for p in parts if p)
            if others:
                message += f" — cleared {_count(len(others), 'viewport')} showing another patient"
            self.statusBar().showMessage(message, STATUS_SECONDS * 1000)
        return True

    def set_layout(self, name: str) -> None:
        self.grid.set_layout(name)
        self.layout_actions[name].setChecked(True)

    def show_error(self, message: str) -> None:
        self.errors.append(message)
        self.statusBar().showMessage(message, STATUS_SECONDS * 1000)
        if not self._quiet:
            QMessageBox.warning(self, "Custodian", message)

    # ------------------------------------------------------------------ plumbing
    def _ask(self, call: Callable[..., T], *args: object) -> T | None:
        try:
            return call(*args)
        except CustodianError as exc:
            self.show_error(str(exc))
            return None

    def _list_series(self, study_uid: str) -> None:
        if study_uid == self._listed_study:
            return
        series = self._ask(self._vault.series, self._session, study_uid)
        self._series = series or []
        self._listed_study = study_uid if series is not None else None
        self.browser.set_series(self._series)
        study = self._studies.get(study_uid)
        if study is not None and series is not None:
            listed = _count(len(series), "series", "series")
            self.statusBar().showMessage(f"{iso_date(study.study_date)} {study.description} · {listed}",
                                         STATUS_SECONDS * 1000)

    def _series_chosen(self, series_uid: str) -> None:
        if self.grid.active.series_uid != series_uid:
            self.load_series(series_uid)

    def _viewport_activated(self, viewport: Viewport) -> None:
        self.browser.select_series(viewport.series_uid)

    def _show_controls(self) -> None:
        QMessageBox.information(self, "Viewer controls", "\n".join(CONTROLS_HELP))

    def closeEvent(self, event: QCloseEvent) -> None:
        for viewport in self.grid.viewports:  # drop decoded pixels as soon as the window goes
            viewport.clear()
        super().closeEvent(event)

