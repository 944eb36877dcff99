"""The main window: study and series lists on the left, the viewport grid on the right.

Every vault call goes through :meth:`MainWindow.ask`, which turns a ``CustodianError`` into its
plain message for the reader; the window itself never touches files or the database.

The window reads and hangs; its parts do the rest: the session and the lock that hides the work
(:class:`SessionKeeper`), the menus and toolbar (:class:`WindowActions`), what the menus do besides
reading (:class:`Errands`), the series thumbnails (:class:`Thumbnails`) and the downtime banner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QShowEvent
from PySide6.QtWidgets import (
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError, EnrolmentRequired, NotAuthenticated, NotPermitted
from app.imaging.measure import Measurement
from app.imaging.series import SeriesImages
from app.security.accounts import User
from app.security.roles import Action, permits
from app.security.sessions import Session
from app.store.records import SeriesSummary, StudySummary
from app.ui.actions import WindowActions
from app.ui.audit_viewer import AuditViewer
from app.ui.break_glass_dialog import BreakGlassDialog
from app.ui.bridge import Bridge, in_background
from app.ui.corner_text import series_size
from app.ui.dicom_text import iso_date
from app.ui.downtime_banner import DowntimeBanner
from app.ui.errands import Errands
from app.ui.export_wizard import ExportWizard
from app.ui.hanger import Hanger
from app.ui.key_images import KeyImages
from app.ui.pacs_panel import PacsPanel
from app.ui.presentation_states import PresentationStates
from app.ui.reading_aids import ReadingAids
from app.ui.report_view import REPORT_MODALITIES, open_reports
from app.ui.session_keeper import LockedWork, SessionKeeper
from app.ui.study_list import StudyBrowser
from app.ui.three_d import ThreeD
from app.ui.thumbnails import Thumbnails
from app.ui.user_menu import UserMenu
from app.ui.viewport_grid import Viewport, ViewportGrid
from app.ui.wording import corner_lines, counted
from app.vault import Vault

T = TypeVar("T")

STATUS_SECONDS = 8


class MainWindow(QMainWindow):
    """The reading window; the title names the user, never a patient.

    ``idle_limit`` (seconds) overrides the vault's inactivity limit for whoever is logged in.
    """

    def __init__(self, vault: Vault, session: Session, *, layout: str = "1x1", quiet: bool = False,
                 idle_limit: float | None = None, demo_codes: Callable[[], dict[str, str]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._quiet = quiet  # no modal boxes (screenshots): errors are only collected
        self.errors: list[str] = []
        self._studies: dict[str, StudySummary] = {}
        self._series: list[SeriesSummary] = []
        self._listed_study: str | None = None

        self.browser = StudyBrowser()
        self.pacs_panel = PacsPanel(vault, lambda: self.session)
        self.sources = QTabWidget()
        self.sources.addTab(self.browser, "Local")
        self.sources.addTab(self.pacs_panel, "PACS")
        self.sources.setTabToolTip(0, "Studies in this workstation's encrypted cache")
        self.sources.setTabToolTip(1, "Search the PACS and retrieve studies into the cache")
        self.grid = ViewportGrid(layout)
        self.downtime_banner = DowntimeBanner()
        self.keeper = SessionKeeper(self, vault, session, self._workspace(), idle_limit=idle_limit,
                                    demo_codes=demo_codes)
        self.lock_screen = self.keeper.lock_screen
        self.resize(1280, 800)

        self.user_menu = UserMenu(self)
        self.errands = Errands(self, vault)
        self.reading_aids = ReadingAids(self, vault)  # tag browser, series strip, copying a view
        self.hanger = Hanger(self, vault)  # what goes where: by hanging protocol, layout or series
        self.presentation_states = PresentationStates(self, vault)  # GSPS saved, chosen and applied
        self.key_images = KeyImages(self, vault)  # marked while reading, sent as Key Object Selection
        self.window_actions = WindowActions(self)
        self.layout_actions = self.window_actions.layouts
        self.send_action, self.export_action = self.window_actions.send, self.window_actions.export
        self.sync_action, self.mpr_action = self.window_actions.sync, self.window_actions.mpr
        self.layout_actions[layout].setChecked(True)
        self.statusBar().setSizeGripEnabled(False)
        self.keeper.begin(session)  # now that the menus it fits to the role exist

        self._prefetched = Bridge(self._fetched_priors, self)
        self._thumbnails = Thumbnails(self, vault)
        self.three_d = ThreeD(self)
        self._connect()

    def _workspace(self) -> QWidget:
        """The downtime banner above the sources and the grid, side by side."""
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.sources)
        splitter.addWidget(self.grid)
        splitter.setChildrenCollapsible(False)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([560, 720])
        workspace = QWidget()
        column = QVBoxLayout(workspace)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.downtime_banner)
        column.addWidget(splitter, 1)
        return workspace

    def _connect(self) -> None:
        self.pacs_panel.retrieved.connect(self._retrieved)
        self.browser.studySelected.connect(self.list_series)
        self.browser.studyOpened.connect(self.open_study)
        self.browser.seriesSelected.connect(self._series_chosen)
        self.browser.seriesOpened.connect(self._series_chosen)
        self.grid.activeChanged.connect(self._viewport_activated)
        self.grid.measured.connect(self._save_measurement)
        self.grid.measurementRemoved.connect(self._delete_measurement)
        self.grid.failed.connect(self.show_problem)
        self.grid.seriesDropped.connect(self._series_dropped)

    # ------------------------------------------------------------------ public API
    @property
    def session(self) -> Session | None:
        """The session the window works in; None once it was logged out or found ended."""
        return self.keeper.session

    @property
    def locked(self) -> bool:
        return self.keeper.locked

    @property
    def idle_limit(self) -> float:
        return self.keeper.idle_limit

    @idle_limit.setter
    def idle_limit(self, seconds: float) -> None:
        self.keeper.idle_limit = seconds

    @property
    def studies(self) -> Mapping[str, StudySummary]:
        """The study list as last read, by study UID."""
        return self._studies

    @property
    def listed_study(self) -> str | None:
        """The study whose series are listed."""
        return self._listed_study

    @property
    def listed_series(self) -> list[SeriesSummary]:
        return self._series

    # The parts' work, reached through the window by the application and the tests.
    def lock(self, notice: str = "") -> None:
        self.keeper.lock(notice)

    def show_audit_trail(self) -> AuditViewer | None:
        return self.errands.show_audit_trail()

    def export_media(self) -> ExportWizard | None:
        return self.errands.export_media()

    def help_text(self) -> str:
        return self.window_actions.help_text()

    # ------------------------------------------------------------------ reading

    def refresh(self) -> None:
        """Reload the study list, keeping the current study selected when it is still there."""
        if self.session is not None and not permits(self.session.user.role, Action.LIST_STUDIES):
            self.statusBar().showMessage(f"The {self.session.user.role.value} role has no study list.")
            if permits(self.session.user.role, Action.AUDIT_READ) and not self._quiet:
                self.errands.show_audit_trail()  # the privacy officer's work is the trail
            return
        studies = self.ask(self._vault.reading.studies, self.session)
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
        self.show_status(f"{counted(len(studies), 'study', 'studies')} in the local cache")

    def open_study(self, study_uid: str, *, by_protocol: bool = True) -> bool:
        """Select the study and hang it (:class:`Hanger`); then fetch the patient's priors."""
        opened = self.hanger.open_study(study_uid, by_protocol=by_protocol)
        if opened:
            self._prefetch(study_uid)
        return opened

    def _prefetch(self, study_uid: str) -> None:
        """Fetch the patient's priors from the PACS in the background while the reader reads."""
        session = self.session
        if session is None or self._quiet or self._vault.nodes.pacs() is None \
                or not permits(session.user.role, Action.PREFETCH):
            return
        # A busy vault or an absent PACS (an error) only means the priors come another time.
        in_background("prefetch", lambda: self._vault.cache.prefetch_priors(session, study_uid),
                      lambda fetched, _error: self._prefetched.post(fetched or []))

    def _fetched_priors(self, fetched: list[str]) -> None:
        if fetched and not self.locked:
            self.refresh()
            self.show_status(f"{counted(len(fetched), 'prior study', 'prior studies')} fetched "
                             "from the PACS.")

    def load_series(self, series_uid: str, viewport: Viewport | None = None,
                    summary: SeriesSummary | None = None) -> bool:
        """Show a series in ``viewport`` (the active one by default); a report's series opens the
        study's reports instead."""
        summary = summary or self.series_summary(series_uid)
        if summary is not None and summary.modality in REPORT_MODALITIES:
            return open_reports(self, self._vault, summary.study_uid, series_uid) is not None
        if summary is not None and summary.modality == "PR":  # (no images of its own)
            return self.presentation_states.point_to()
        target = viewport or self.grid.active
        cleared = self._hang(target, series_uid, summary.study_uid if summary else None)
        if cleared is None:
            return False
        if summary is not None:
            parts = [f"Series {summary.number}" if summary.number is not None else "Series",
                     summary.modality, summary.description, series_size(target.view.series)]
            message = " · ".join(p for p in parts if p)
            if cleared:
                message += f" — cleared {counted(cleared, 'viewport')} showing another patient"
            self.show_status(message)
        return True

    def series_summary(self, series_uid: str | None) -> SeriesSummary | None:
        """The listed study's (or the series strip's) series ``series_uid``, if it is one."""
        return next((s for s in [*self._series, *self.reading_aids.strip_keeper.series]
                     if s.series_uid == series_uid), None)

    def set_layout(self, name: str, *, hang: bool = True) -> None:
        self.hanger.set_layout(name, hang=hang)

    def hang_per_series(self) -> bool:
        return self.hanger.hang_per_series()

    def show_status(self, message: str) -> None:
        """A message in the status bar that goes after a while."""
        self.statusBar().showMessage(message, STATUS_SECONDS * 1000)

    def show_problem(self, message: str, viewport: Viewport | None = None) -> None:
        """Why an image cannot be shown: in ``viewport`` and the status bar, never a box in the way."""
        if viewport is not None:
            viewport.clear()
            viewport.view.show_problem(message)
        self.errors.append(message)
        if not self.locked:
            self.show_status(message)

    def show_error(self, message: str) -> None:
        self.errors.append(message)
        if self.locked:
            return  # nothing but the lock screen while locked
        self.show_status(message)
        if not self._quiet:
            QMessageBox.warning(self, "Custodian", message)

    # ------------------------------------------------------------------ for the session keeper
    def fit_role(self, user: User) -> None:
        """The user menu, actions and the PACS tab as ``user``'s role may use them."""
        self.user_menu.set_user(user)
        self.window_actions.fit_role(user.role)
        self.hanger.fit_role(user.role)
        self.sources.setTabVisible(1, permits(user.role, Action.QUERY))
        self.sources.setCurrentIndex(0)

    def put_away(self) -> LockedWork:
        """Drop every study, series and pixel shown (the lock); returns what to read back later."""
        self.three_d.close()
        self._thumbnails.cancel()
        work = LockedWork(self.browser.current_study_uid(), self.browser.filter_edit.text(),
                          self.grid.blank())
        self.browser.clear()
        self.pacs_panel.clear()
        self._studies, self._series, self._listed_study = {}, [], None
        self.statusBar().clearMessage()
        return work

    def resume(self, work: LockedWork) -> None:
        """Read the locked work back through the vault: same layout, series, slices and windows."""
        self.browser.filter_edit.setText(work.filter_text)
        if work.study_uid is not None:
            self.browser.select_study(work.study_uid)
        self.set_layout(work.grid.layout, hang=False)
        for viewport, view in zip(self.grid.viewports, work.grid.views, strict=True):
            if view is not None and self._hang(viewport, view.series_uid, view.study_uid) is not None:
                viewport.view.set_index(view.index)
                if view.window is not None:
                    viewport.view.set_window(view.window)
        active = self.grid.viewports[work.grid.active]
        self.grid.set_active(active)
        active.view.setFocus()
        self.browser.select_series(active.series_uid)

    def _retrieved(self, study_uid: str) -> None:
        self.refresh()
        self.sources.setCurrentIndex(0)
        self.browser.select_study(study_uid)
        self.show_status(self.pacs_panel.summary.text())

    # ------------------------------------------------------------------ plumbing
    def ask(self, call: Callable[..., T], *args: object, passing: tuple[type[CustodianError], ...] = (),
            report: Callable[[str], None] | None = None) -> T | None:
        """``call(*args)``, or None after ``report`` (else :meth:`show_error`) said why not;
        ``passing`` errors go to the caller.

        A session the vault no longer accepts locks the window: the lock screen sorts out
        whether it can be unlocked.
        """
        if self.session is None or self.locked:
            return None
        try:
            return call(*args)
        except passing:
            raise
        except NotAuthenticated as exc:
            (self.show_error if self._quiet else self.keeper.lock)(str(exc))
            return None
        except CustodianError as exc:
            (report or self.show_error)(str(exc))
            return None

    def _hang(self, viewport: Viewport, series_uid: str, study_uid: str | None) -> int | None:
        """Show a series in ``viewport`` and clear viewports of other patients; how many, or None."""
        study = self._studies.get(study_uid) if study_uid else None
        images = self._open_series(series_uid, study, partial(self.show_problem, viewport=viewport))
        if images is None:
            return None
        key = study.patient_key if study else None
        viewport.show_series(series_uid, study_uid, key, images, self._measurements_of(series_uid))
        if viewport.series_uid is None:
            return None  # its first image could not be shown; the view reported why
        viewport.view.set_corner_text(*corner_lines(study, self.series_summary(series_uid)))
        others = [v for v in self.grid.viewports
                  if v is not viewport and v.series_uid and v.patient_key != key]
        for other in others:  # never leave another patient's images beside this one
            other.clear()
        return len(others)

    def _may_measure(self) -> bool:
        return self.session is not None and permits(self.session.user.role, Action.MEASURE)

    def _measurements_of(self, series_uid: str) -> list[Measurement]:
        """The reader's saved measurements (roles that may not save them draw them for the moment)."""
        if not self._may_measure():
            return []
        return self.ask(self._vault.reading.measurements, self.session, series_uid) or []

    def _save_measurement(self, viewport: Viewport, measurement: Measurement) -> None:
        if not self._may_measure():
            return
        saved = self.ask(self._vault.reading.save_measurement, self.session, measurement)
        if saved is not None and viewport.view.series is not None:
            viewport.view.add_measurement(saved)

    def _delete_measurement(self, viewport: Viewport, measurement: Measurement) -> None:
        if measurement.id is not None and self._may_measure():
            self.ask(self._vault.reading.delete_measurement, self.session, measurement.id)

    def open_3d(self) -> QWidget | None:
        return self.three_d.open()

    def _open_series(self, series_uid: str, study: StudySummary | None,
                     report: Callable[[str], None]) -> SeriesImages | None:
        """The series' images, else ``report`` says why; a restricted patient's refusal offers break-glass."""
        try:
            return self.ask(self._vault.reading.open_series, self.session, series_uid,
                            passing=(NotPermitted,), report=report)
        except NotPermitted as exc:
            if study is None or not self._may_break_glass(study, exc):
                self.show_error(str(exc))
                return None
            if not self._break_glass(study, str(exc)):
                return None
        return self.ask(self._vault.reading.open_series, self.session, series_uid, report=report)

    def _may_break_glass(self, study: StudySummary, refusal: NotPermitted) -> bool:
        return (study.restricted and not self._quiet and self.session is not None
                and not isinstance(refusal, EnrolmentRequired)
                and permits(self.session.user.role, Action.BREAK_GLASS))

    def _break_glass(self, study: StudySummary, refusal: str) -> bool:
        if self.session is None:
            return False
        dialog = BreakGlassDialog(self._vault, self.session, study.study_uid, refusal, self)
        if not dialog.exec():
            if dialog.ended is not None:
                self.lock(dialog.ended)
            return False
        self.refresh()  # the grant shows this patient's details to the reader
        return not self.locked

    def list_series(self, study_uid: str) -> None:
        """List the study's series (once: a study listed already is left as it is)."""
        if study_uid == self._listed_study:
            return
        series = self.ask(self._vault.reading.series, self.session, study_uid)
        self._series = series or []
        self._listed_study = study_uid if series is not None else None
        self.browser.set_series(self._series)
        study = self._studies.get(study_uid)
        if study is not None and series is not None:
            listed = counted(len(series), "series", "series")
            self.show_status(f"{iso_date(study.study_date)} {study.description} · {listed}")
            self._thumbnails.request()

    def _series_dropped(self, viewport: Viewport, series_uid: str) -> None:
        """A series dragged from the series list onto a viewport: show it there and work in it."""
        if self.load_series(series_uid, viewport):
            self.grid.set_active(viewport)
            viewport.view.setFocus()

    def _series_chosen(self, series_uid: str) -> None:
        if self.grid.active.series_uid != series_uid:
            self.load_series(series_uid)

    def _viewport_activated(self, viewport: Viewport) -> None:
        self.browser.select_series(viewport.series_uid)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.keeper.watch_idle()

    def closeEvent(self, event: QCloseEvent) -> None:
        if event.spontaneous() and not self.window_actions.confirm_quit():  # the title bar's close
            event.ignore()
            return
        self.keeper.idle_watch.stop()
        self.three_d.close()
        for viewport in self.grid.viewports:  # drop decoded pixels as soon as the window goes
            viewport.clear()
        super().closeEvent(event)
