"""The main window: study and series lists on the left, the viewport grid on the right.

Every vault call goes through :meth:`MainWindow._ask`, which turns a ``CustodianError`` into its
plain message for the reader; the window itself never touches files or the database.

Automatic logoff (HIPAA 164.312(a)(2)(iii)): after the idle limit without input, or on Ctrl+L,
the window locks. Every patient detail and pixel is dropped at once, only identifiers of what was
open are kept (layout, which series where, slice, window), and the lock screen asks the same user
back in; unlocking reads it all again through the vault. Logging in as someone else ends the
locked session and starts with an empty window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolBar,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError, EnrolmentRequired, NotAuthenticated, NotPermitted
from app.imaging.hanging import layout_for, relevant_prior
from app.imaging.measure import Measurement
from app.imaging.series import SeriesImages
from app.imaging.volume import build_volume
from app.net.watch import PacsStatus
from app.security.accounts import User
from app.security.roles import Action, permits
from app.security.sessions import Session
from app.store.records import SeriesSummary, StudySummary
from app.ui.account_dialogs import ChangePasswordDialog
from app.ui.admin_users import AdminUsersDialog
from app.ui.audit_viewer import AuditViewer
from app.ui.break_glass_dialog import BreakGlassDialog
from app.ui.bridge import Bridge, in_background
from app.ui.clipboard_guard import ClipboardGuard
from app.ui.dicom_text import iso_date
from app.ui.disclosures_dialog import DisclosuresDialog
from app.ui.enrolment_dialog import reenrol
from app.ui.export_wizard import ExportWizard
from app.ui.idle_watch import IdleWatch
from app.ui.image_view import CONTROLS_HELP
from app.ui.lock_screen import LockScreen
from app.ui.login_dialog import LoginDialog
from app.ui.outside_media_dialog import OutsideMediaDialog
from app.ui.pacs_panel import PacsPanel
from app.ui.study_list import StudyBrowser
from app.ui.user_menu import UserMenu
from app.ui.viewport_grid import GridState, Viewport, ViewportGrid
from app.vault import Vault
from app.vault.outbox import SendResult

T = TypeVar("T")

LAYOUT_SHORTCUTS = {"1x1": "Ctrl+1", "1x2": "Ctrl+2", "2x2": "Ctrl+4", "2x3": "Ctrl+6", "3x3": "Ctrl+9"}
STATUS_SECONDS = 8
BROWSER_HELP = (
    "Study list: select to list the series, Enter or double-click opens the study with the relevant "
    "prior beside it",
    "Timeline (above the series): the patient's studies, newest first, the relevant prior in amber; "
    "click to list, double-click to open",
    "Series list: select or double-click to show in the active viewport, or drag a series onto any "
    "viewport",
)
THUMBNAIL_DELAY_MS = 250  # a reader arrowing down the list is not asking for every study's images
LOCKED_TITLE = "Custodian — locked"


def _count(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


@dataclass(frozen=True)
class LockedWork:
    """What was open when the window locked: identifiers to read it back with, nothing shown."""

    study_uid: str | None
    filter_text: str
    grid: GridState


def _corner_lines(study: StudySummary | None,
                  series: SeriesSummary | None) -> tuple[list[str], list[str]]:
    """Top-left patient and top-right study lines, from what the vault let this role see."""
    if study is None:
        return [], []
    born = " ".join(p for p in (iso_date(study.birth_date) if study.birth_date else "",
                                study.sex or "") if p)
    patient = [study.patient_name.replace("^", " ").strip() if study.patient_name else "",
               ("ID " + (study.patient_id or "(none)")) if study.patient_id is not None else "", born,
               "\u26a0 ID also names another patient" if study.identity_conflict else ""]
    described = [iso_date(study.study_date), study.description,
                 f"Acc {study.accession}" if study.accession else "",
                 " ".join(p for p in (f"Se {series.number}" if series and series.number is not None
                                      else "", series.description if series else "") if p)]
    return [line for line in patient if line], [line for line in described if line]


class MainWindow(QMainWindow):
    """The reading window; the title names the user, never a patient.

    ``idle_limit`` (seconds) overrides the vault's inactivity limit for whoever is logged in.
    """

    def __init__(self, vault: Vault, session: Session, *, layout: str = "1x1", quiet: bool = False,
                 idle_limit: float | None = None, demo_codes: Callable[[], dict[str, str]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._session: Session | None = session
        self._quiet = quiet  # no modal boxes (screenshots): errors are only collected
        self._idle_limit = idle_limit
        self._demo_codes = demo_codes
        self.errors: list[str] = []
        self._studies: dict[str, StudySummary] = {}
        self._series: list[SeriesSummary] = []
        self._listed_study: str | None = None
        self._locked_work: LockedWork | None = None
        self._audit_viewer: AuditViewer | None = None
        self._mpr_window: QWidget | None = None
        self._thumbnail_ticket = 0  # answers to older requests are dropped

        self.browser = StudyBrowser()
        self.pacs_panel = PacsPanel(vault, lambda: self._session)
        self.sources = QTabWidget()
        self.sources.addTab(self.browser, "Local")
        self.sources.addTab(self.pacs_panel, "PACS")
        self.sources.setTabToolTip(0, "Studies in this workstation's encrypted cache")
        self.sources.setTabToolTip(1, "Search the PACS and retrieve studies into the cache")
        self.grid = ViewportGrid(layout)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.sources)
        splitter.addWidget(self.grid)
        splitter.setChildrenCollapsible(False)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([560, 720])
        self.lock_screen = LockScreen(vault)
        self.downtime_banner = QLabel(wordWrap=True)
        self.downtime_banner.setObjectName("downtime-banner")
        self.downtime_banner.hide()
        workspace = QWidget()
        column = QVBoxLayout(workspace)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.downtime_banner)
        column.addWidget(splitter, 1)
        self._pages = QStackedWidget()
        self._workspace = workspace
        self._pages.addWidget(workspace)
        self._pages.addWidget(self.lock_screen)
        self.setCentralWidget(self._pages)
        self.resize(1280, 800)

        self.user_menu = UserMenu(self)
        self.layout_actions = self._build_actions()
        self.layout_actions[layout].setChecked(True)
        self.statusBar().setSizeGripEnabled(False)
        self.idle_watch = IdleWatch(self._limit_for(session.user), self)
        self._clipboard = ClipboardGuard(self)
        self._begin(session)

        self.pacs_panel.retrieved.connect(self._retrieved)
        self._send_done = Bridge(self._sent, self)
        self._prefetched = Bridge(self._fetched_priors, self)
        self._thumbnails_ready = Bridge(self._show_thumbnails, self)
        self._thumbnail_timer = QTimer(self, singleShot=True, interval=THUMBNAIL_DELAY_MS)
        self._thumbnail_timer.timeout.connect(self._load_thumbnails)
        self.browser.studySelected.connect(self._list_series)
        self.browser.studyOpened.connect(self.open_study)
        self.browser.seriesSelected.connect(self._series_chosen)
        self.browser.seriesOpened.connect(self._series_chosen)
        self.grid.activeChanged.connect(self._viewport_activated)
        self.grid.measured.connect(self._save_measurement)
        self.grid.measurementRemoved.connect(self._delete_measurement)
        self.grid.failed.connect(self.show_error)
        self.grid.seriesDropped.connect(self._series_dropped)
        self.idle_watch.idle.connect(self.lock)
        self.idle_watch.active.connect(self._keep_alive)
        self.lock_screen.unlocked.connect(self._unlocked)
        self.lock_screen.ended.connect(self._session_ended)
        self.lock_screen.loginRequested.connect(self.log_in_again)

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
        self.send_action = QAction("&Send study to PACS", self, shortcut=QKeySequence("Ctrl+Shift+S"),
                                   toolTip="Send the selected study to the PACS (Ctrl+Shift+S); while "
                                           "the PACS is down it waits and goes out when it is back")
        self.send_action.triggered.connect(self.send_current_study)
        self.export_action = QAction("&Export media…", self, shortcut=QKeySequence("Ctrl+E"),
                                     toolTip="Burn the selected patient's studies to encrypted USB or CD "
                                             "media, recorded as a disclosure (Ctrl+E)")
        self.export_action.triggered.connect(self.export_media)
        self.outside_action = QAction("&Import outside media…", self, shortcut=QKeySequence("Ctrl+I"),
                                      toolTip="Read a CD, USB stick, CD image or zip from elsewhere, see "
                                              "what is on it and import it (Ctrl+I)")
        self.outside_action.triggered.connect(self.import_outside_media)
        self.sync_action = QAction("&Synchronise scrolling", self, checkable=True, checked=True,
                                   shortcut=QKeySequence("S"),
                                   toolTip="Scroll viewports of the same patient together, by slice "
                                           "position; turning it on keeps the slices now side by side (S)")
        self.sync_action.toggled.connect(self.grid.set_synchronised)
        self.mpr_action = QAction("3D / &MPR…", self, shortcut=QKeySequence("Ctrl+M"),
                                  toolTip="Axial, coronal and sagittal planes, thick slabs, oblique and "
                                          "volume rendering of the active viewport's series (Ctrl+M)")
        self.mpr_action.triggered.connect(self.open_3d)
        per_series = QAction("One viewport per &series", self, shortcut=QKeySequence("Ctrl+0"),
                             toolTip="A layout with a viewport for each series of the selected study, "
                                     "all of them hung (Ctrl+0)")
        per_series.triggered.connect(self.hang_per_series)
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

        menu = self.user_menu
        menu.lock_action.triggered.connect(lambda: self.lock())
        menu.switch_action.triggered.connect(self.switch_user)
        menu.logout_action.triggered.connect(self.log_out)
        menu.password_action.triggered.connect(self.change_password)
        menu.reenrol_action.triggered.connect(self.set_up_authenticator)
        menu.users_action.triggered.connect(self.manage_users)
        menu.audit_action.triggered.connect(self.show_audit_trail)
        menu.disclosures_action.triggered.connect(self.show_disclosures)

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(refresh)
        file_menu.addAction(self.send_action)
        file_menu.addAction(self.export_action)
        file_menu.addAction(self.outside_action)
        file_menu.addSeparator()
        file_menu.addAction(quit_)
        view_menu = self.menuBar().addMenu("&View")
        layout_menu = view_menu.addMenu("&Layout")
        layout_menu.addActions(list(layouts.values()))
        layout_menu.addSeparator()
        layout_menu.addAction(per_series)
        view_menu.addAction(reset)
        view_menu.addAction(self.sync_action)
        view_menu.addAction(self.mpr_action)
        self.menuBar().addMenu(menu)
        self.menuBar().addMenu("&Help").addAction(controls)

        self._toolbar = toolbar = QToolBar("Viewer")
        toolbar.setObjectName("viewer-toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        toolbar.addAction(refresh)
        toolbar.addSeparator()
        toolbar.addActions(list(layouts.values()))
        toolbar.addSeparator()
        toolbar.addAction(reset)
        toolbar.addAction(self.sync_action)
        toolbar.addAction(self.mpr_action)
        self.addToolBar(toolbar)
        self.sync_action.setIconText("Sync")
        self.mpr_action.setIconText("3D")
        refresh.setIconText("Refresh")
        reset.setIconText("Reset W/L")
        # Off while locked: no shortcut may reach the work behind the lock screen.
        self._work_actions = [refresh, reset, self.sync_action, self.mpr_action, controls, per_series,
                              self.send_action,
                              self.export_action,
                              self.outside_action, *layouts.values(), *menu.actions()]
        return layouts

    # ------------------------------------------------------------------ public API
    @property
    def session(self) -> Session | None:
        """The session the window works in; None once it was logged out or found ended."""
        return self._session

    @property
    def locked(self) -> bool:
        return self._pages.currentWidget() is self.lock_screen

    @property
    def idle_limit(self) -> float:
        return self.idle_watch.limit

    @idle_limit.setter
    def idle_limit(self, seconds: float) -> None:
        self._idle_limit = seconds
        self.idle_watch.limit = seconds

    def refresh(self) -> None:
        """Reload the study list, keeping the current study selected when it is still there."""
        if self._session is not None and not permits(self._session.user.role, Action.LIST_STUDIES):
            self.statusBar().showMessage(f"The {self._session.user.role.value} role has no study list.")
            if permits(self._session.user.role, Action.AUDIT_READ) and not self._quiet:
                self.show_audit_trail()  # the privacy officer's work is the trail
            return
        studies = self._ask(self._vault.reading.studies, self._session)
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
        study = self._studies[study_uid]
        viewports = self.grid.visible_viewports()
        hung = list(zip(viewports, self._series, strict=False))
        spare = viewports[len(hung):]
        prior = relevant_prior(study, self._studies.values()) if spare else None
        if prior is not None:
            prior_series = self._ask(self._vault.reading.series, self._session, prior.study_uid) or []
            hung += list(zip(spare, prior_series, strict=False))
        for viewport, series in hung:
            shown = self.load_series(series.series_uid, viewport, series)
            if not shown and (study.restricted or self.locked):
                return False  # access refused (no break-glass), or locked meanwhile: hang nothing more
        for viewport in viewports[len(hung):]:
            viewport.clear()
        self.grid.set_active(viewports[0])
        viewports[0].view.setFocus()
        self.browser.select_series(viewports[0].series_uid)
        self._prefetch(study_uid)
        return True

    def _prefetch(self, study_uid: str) -> None:
        """Fetch the patient's priors from the PACS in the background while the reader reads."""
        session = self._session
        if session is None or self._quiet or self._vault.nodes.pacs() is None \
                or not permits(session.user.role, Action.PREFETCH):
            return
        # A busy vault or an absent PACS (an error) only means the priors come another time.
        in_background("prefetch", lambda: self._vault.cache.prefetch_priors(session, study_uid),
                      lambda fetched, _error: self._prefetched.post(fetched or []))

    def _fetched_priors(self, fetched: list[str]) -> None:
        if fetched and not self.locked:
            self.refresh()
            self.statusBar().showMessage(f"{_count(len(fetched), 'prior study', 'prior studies')} fetched "
                                         "from the PACS.", STATUS_SECONDS * 1000)

    def load_series(self, series_uid: str, viewport: Viewport | None = None,
                    summary: SeriesSummary | None = None) -> bool:
        """Show a series in ``viewport`` (the active one by default)."""
        summary = summary or next((s for s in self._series if s.series_uid == series_uid), None)
        target = viewport or self.grid.active
        cleared = self._hang(target, series_uid, summary.study_uid if summary else None)
        if cleared is None:
            return False
        if summary is not None:
            parts = [f"Series {summary.number}" if summary.number is not None else "Series",
                     summary.modality, summary.description, _count(len(target.view.series or ()), "image")]
            message = " · ".join(p for p in parts if p)
            if cleared:
                message += f" — cleared {_count(cleared, 'viewport')} showing another patient"
            self.statusBar().showMessage(message, STATUS_SECONDS * 1000)
        return True

    def set_layout(self, name: str) -> None:
        self.grid.set_layout(name)
        self.layout_actions[name].setChecked(True)

    def hang_per_series(self) -> bool:
        """Switch to the layout with a viewport for each series of the selected study and open it."""
        study_uid = self.browser.current_study_uid()
        if study_uid is None:
            self.show_error("Select a study first: each of its series gets a viewport.")
            return False
        self._list_series(study_uid)
        if self._listed_study != study_uid:
            return False
        self.set_layout(layout_for(len(self._series)))
        opened = self.open_study(study_uid)
        if opened and len(self._series) > len(self.grid.visible_viewports()):
            self.statusBar().showMessage(f"The first {len(self.grid.visible_viewports())} of "
                                         f"{len(self._series)} series are shown; drag others onto a "
                                         "viewport.", STATUS_SECONDS * 1000)
        return opened

    def show_error(self, message: str) -> None:
        self.errors.append(message)
        if self.locked:
            return  # nothing but the lock screen while locked
        self.statusBar().showMessage(message, STATUS_SECONDS * 1000)
        if not self._quiet:
            QMessageBox.warning(self, "Custodian", message)

    # ------------------------------------------------------------------ lock and sessions
    def lock(self, notice: str = "") -> None:
        """Hide every patient detail at once; the lock screen asks the same user back in."""
        if self._session is None or self.locked:
            return
        self._locked_work = self._blank()
        self.lock_screen.lock(self._session, notice)

    def switch_user(self) -> None:
        """Lock, then let someone else log in (which ends this session)."""
        self.lock()
        self.log_in_again()

    def log_out(self) -> None:
        """End the session; the login dialog offers the next one, or the window closes."""
        if self._session is None:
            return
        self._blank()
        self._end_session()
        self.lock_screen.end("You have logged out.")
        if not self.log_in_again():
            self.close()

    def log_in_again(self) -> bool:
        """A login from the lock screen: the locked session (if any) ends, the new one starts empty."""
        dialog = LoginDialog(self._vault, demo_codes=self._demo_codes, parent=self)
        if not dialog.exec() or dialog.session is None:
            return False
        self._end_session()
        self._locked_work = None
        self._begin(dialog.session)
        self._show_workspace()
        self.refresh()
        return True

    def change_password(self) -> None:
        if self._session is not None and ChangePasswordDialog(self._vault, self._session, self).exec():
            self.statusBar().showMessage("Your password was changed.", STATUS_SECONDS * 1000)

    def set_up_authenticator(self) -> None:
        session = self._ask(reenrol, self._vault, self._session, self)
        if session is not None:
            self._session = session
            self.statusBar().showMessage("Your new authenticator is set up; the old one and its recovery "
                                         "codes no longer work.", STATUS_SECONDS * 1000)

    def show_audit_trail(self) -> AuditViewer | None:
        """The audit viewer, beside the main window; the lock closes (and drops) it."""
        if self._session is None:
            return None
        viewer = self._audit_viewer
        if viewer is None:
            self._audit_viewer = viewer = AuditViewer(self._vault, self._session, self)
            viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            viewer.finished.connect(self._audit_viewer_closed)
            viewer.show()
            viewer.search()
        viewer.raise_()
        viewer.activateWindow()
        return viewer

    def export_media(self) -> ExportWizard | None:
        """The export wizard for the selected study's patient (their other studies can be added)."""
        study_uid, session = self.browser.current_study_uid(), self._session
        study = self._studies.get(study_uid) if study_uid else None
        if study is None or session is None:
            self.show_error("Select a study of the patient whose images go on the media.")
            return None
        same_patient = [s for s in self._studies.values() if s.patient_key == study.patient_key]
        wizard = ExportWizard(self._vault, session, same_patient, study.study_uid, self)
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        wizard.show()
        return wizard

    def import_outside_media(self) -> None:
        if self._session is not None:
            OutsideMediaDialog(self._vault, self._session, self).exec()
            self.refresh()

    def show_disclosures(self) -> None:
        if self._session is not None:
            DisclosuresDialog(self._vault, self._session, self).exec()

    def _audit_viewer_closed(self) -> None:
        self._audit_viewer = None

    def send_current_study(self) -> None:
        """Send the selected study to the site's PACS, in the background; the status bar reports."""
        study_uid, node, session = self.browser.current_study_uid(), self._vault.nodes.pacs(), self._session
        if study_uid is None or node is None or session is None:
            self.show_error("Select a study to send first." if node else
                            "No PACS node is set: an administrator adds one with 'custodian node add'.")
            return
        self.statusBar().showMessage(f"Sending to {node.name}…")
        in_background("send", lambda: self._vault.outbox.send(session, node.name, study_uid),
                      lambda result, error: self._send_done.post(result, error, node.name))

    def _sent(self, result: SendResult | None, error: str | None, node: str) -> None:
        if result is None:
            self.show_error(f"The study could not be sent: {error}")
        elif result.queued:
            self.statusBar().showMessage(f"{node} cannot be reached now: the study waits in the outbox "
                                         "and goes out when it is back.", STATUS_SECONDS * 1000)
        elif result.report.failed:
            self.show_error(f"Sent {len(result.report.sent)} image(s) to {node}; "
                            f"{len(result.report.failed)} were refused: "
                            + "; ".join(sorted(set(result.report.failed.values()))))
        else:
            self.statusBar().showMessage(f"Sent {len(result.report.sent)} image(s) to {node}.",
                                         STATUS_SECONDS * 1000)

    def _retrieved(self, study_uid: str) -> None:
        self.refresh()
        self.sources.setCurrentIndex(0)
        self.browser.select_study(study_uid)
        self.statusBar().showMessage(self.pacs_panel.summary.text(), STATUS_SECONDS * 1000)

    def show_emergency(self) -> None:
        """Emergency mode, said where the downtime banner goes; it stays for the whole run."""
        self.downtime_banner.setText("Emergency mode: the PACS and the audit repository are both down. You "
                                     "are reading from the local cache, which is read-only: nothing can be "
                                     "imported, sent or exported until Custodian starts normally.")
        self.downtime_banner.show()

    def set_pacs_status(self, status: PacsStatus) -> None:
        """The downtime banner: shown while the site's PACS does not answer (reading goes on)."""
        if status.node is None or status.reachable:
            self.downtime_banner.hide()
            return
        waiting = (f" {_count(status.waiting, 'send waits', 'sends wait')} and will go out when it is back."
                   if status.waiting else "")
        self.downtime_banner.setText(f"The PACS ({status.node}) cannot be reached: you are reading from "
                                     f"the local cache; studies and priors stored here stay available."
                                     f"{waiting}")
        self.downtime_banner.setToolTip(status.error or "")
        self.downtime_banner.show()

    def manage_users(self) -> None:
        if self._session is not None:
            AdminUsersDialog(self._vault, self._session, self).exec()

    def _begin(self, session: Session) -> None:
        self._session = session
        self.user_menu.set_user(session.user)
        self.send_action.setVisible(permits(session.user.role, Action.SEND))
        self.export_action.setVisible(permits(session.user.role, Action.EXPORT))
        self.outside_action.setVisible(permits(session.user.role, Action.IMPORT))
        self.sources.setTabVisible(1, permits(session.user.role, Action.QUERY))
        self.sources.setCurrentIndex(0)
        self.idle_watch.limit = self._limit_for(session.user)
        self.setWindowTitle(self._title())

    def _limit_for(self, user: User) -> float:
        if self._idle_limit is not None:
            return self._idle_limit
        return self._vault.accounts.inactivity_limit(user)

    def _title(self) -> str:
        user = self._session.user if self._session else None
        return f"Custodian — {user.name} ({user.role.value})" if user else LOCKED_TITLE

    def _blank(self) -> LockedWork:
        """Drop everything that shows a patient and switch to the lock screen; returns what was open."""
        for dialog in self.findChildren(QDialog):
            if dialog.isVisible():
                dialog.reject()  # a dialog's own exec() returns as cancelled
        popup = QApplication.activePopupWidget()
        while popup is not None and popup.close():  # an open menu
            popup = QApplication.activePopupWidget()
        QToolTip.hideText()  # a table cell's tooltip repeats the patient's name
        self._close_3d()
        self._thumbnail_timer.stop()
        self._thumbnail_ticket += 1
        work = LockedWork(self.browser.current_study_uid(), self.browser.filter_edit.text(),
                          self.grid.blank())
        self.browser.clear()
        self.pacs_panel.clear()
        self._studies, self._series, self._listed_study = {}, [], None
        self._clipboard.clear()
        self.statusBar().clearMessage()
        self.idle_watch.stop()
        self._set_workspace(False)
        self.setWindowTitle(LOCKED_TITLE)
        return work

    def _show_workspace(self) -> None:
        self._set_workspace(True)
        self.setWindowTitle(self._title())
        self.idle_watch.start()

    def _set_workspace(self, shown: bool) -> None:
        self._pages.setCurrentWidget(self._workspace if shown else self.lock_screen)
        self.menuBar().setVisible(shown)
        self._toolbar.setVisible(shown)
        for action in self._work_actions:
            action.setEnabled(shown)

    def _unlocked(self, session: Session) -> None:
        self._session = session
        work, self._locked_work = self._locked_work, None
        self._show_workspace()
        self.refresh()
        if work is not None:
            self._resume(work)

    def _resume(self, work: LockedWork) -> None:
        """Read the locked work back through the vault: same layout, series, slices and windows."""
        self.browser.filter_edit.setText(work.filter_text)
        if work.study_uid is not None:
            self.browser.select_study(work.study_uid)
        self.set_layout(work.grid.layout)
        for viewport, view in zip(self.grid.viewports, work.grid.views, strict=True):
            if view is not None and self._hang(viewport, view.series_uid, view.study_uid) is not None:
                viewport.view.set_index(view.index)
                if view.window is not None:
                    viewport.view.set_window(view.window)
        active = self.grid.viewports[work.grid.active]
        self.grid.set_active(active)
        active.view.setFocus()
        self.browser.select_series(active.series_uid)

    def _session_ended(self) -> None:
        self._session = None
        self._locked_work = None

    def _end_session(self) -> None:
        if self._session is not None:
            with contextlib.suppress(CustodianError):  # it may have ended already
                self._vault.accounts.logout(self._session)
        self._session = None

    def _keep_alive(self) -> None:
        """The reader is at work: keep the vault's idle clock in step with the window's."""
        if self._session is None or self.locked:
            return
        try:
            self._vault.accounts.whoami(self._session)
        except NotAuthenticated as exc:
            self.lock(str(exc))

    # ------------------------------------------------------------------ plumbing
    def _ask(self, call: Callable[..., T], *args: object,
             passing: tuple[type[CustodianError], ...] = ()) -> T | None:
        """``call(*args)``, or None after showing why not; ``passing`` errors go to the caller.

        A session the vault no longer accepts locks the window: the lock screen sorts out
        whether it can be unlocked.
        """
        if self._session is None or self.locked:
            return None
        try:
            return call(*args)
        except passing:
            raise
        except NotAuthenticated as exc:
            if self._quiet:
                self.show_error(str(exc))
            else:
                self.lock(str(exc))
            return None
        except CustodianError as exc:
            self.show_error(str(exc))
            return None

    def _hang(self, viewport: Viewport, series_uid: str, study_uid: str | None) -> int | None:
        """Show a series in ``viewport`` and clear viewports of other patients; how many, or None."""
        study = self._studies.get(study_uid) if study_uid else None
        images = self._open_series(series_uid, study)
        if images is None:
            return None
        key = study.patient_key if study else None
        viewport.show_series(series_uid, study_uid, key, images, self._measurements_of(series_uid))
        if viewport.series_uid is None:
            return None  # its first image could not be shown; the view reported why
        viewport.view.set_corner_text(*_corner_lines(study, next(
            (s for s in self._series if s.series_uid == series_uid), None)))
        others = [v for v in self.grid.viewports
                  if v is not viewport and v.series_uid and v.patient_key != key]
        for other in others:  # never leave another patient's images beside this one
            other.clear()
        return len(others)

    def _may_measure(self) -> bool:
        return self._session is not None and permits(self._session.user.role, Action.MEASURE)

    def _measurements_of(self, series_uid: str) -> list[Measurement]:
        """The reader's saved measurements (roles that may not save them draw them for the moment)."""
        if not self._may_measure():
            return []
        return self._ask(self._vault.reading.measurements, self._session, series_uid) or []

    def _save_measurement(self, viewport: Viewport, measurement: Measurement) -> None:
        if not self._may_measure():
            return
        saved = self._ask(self._vault.reading.save_measurement, self._session, measurement)
        if saved is not None and viewport.view.series is not None:
            viewport.view.add_measurement(saved)

    def _delete_measurement(self, viewport: Viewport, measurement: Measurement) -> None:
        if measurement.id is not None and self._may_measure():
            self._ask(self._vault.reading.delete_measurement, self._session, measurement.id)

    def open_3d(self) -> QWidget | None:
        """MPR and volume rendering of the active viewport's series, in a window of its own."""
        series = self.grid.active.view.series
        if series is None:
            self.show_error("Open a series first: 3D shows the series of the active viewport.")
            return None
        from app.ui.mpr_window import MprWindow, display_available  # VTK loads only for 3D

        if not display_available():
            self.show_error("3D needs a display: VTK cannot draw on Qt's offscreen platform.")
            return None
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            volume = self._ask(build_volume, series)
        finally:
            QApplication.restoreOverrideCursor()
        if volume is None:
            return None
        self._close_3d()
        summary = next((s for s in self._series if s.series_uid == self.grid.active.series_uid), None)
        title = f"3D / MPR — {summary.modality} {summary.description}" if summary else "3D / MPR"
        self._mpr_window = MprWindow(volume, title, self)
        self._mpr_window.show()
        return self._mpr_window

    def _close_3d(self) -> None:
        if self._mpr_window is not None:
            self._mpr_window.close()
            self._mpr_window.deleteLater()  # the volume goes with it
            self._mpr_window = None

    def _open_series(self, series_uid: str, study: StudySummary | None) -> SeriesImages | None:
        """The series' images; a restricted patient's refusal offers break-glass first."""
        try:
            return self._ask(self._vault.reading.open_series, self._session, series_uid,
                             passing=(NotPermitted,))
        except NotPermitted as exc:
            if study is None or not self._may_break_glass(study, exc):
                self.show_error(str(exc))
                return None
            if not self._break_glass(study, str(exc)):
                return None
        return self._ask(self._vault.reading.open_series, self._session, series_uid)

    def _may_break_glass(self, study: StudySummary, refusal: NotPermitted) -> bool:
        return (study.restricted and not self._quiet and self._session is not None
                and not isinstance(refusal, EnrolmentRequired)
                and permits(self._session.user.role, Action.BREAK_GLASS))

    def _break_glass(self, study: StudySummary, refusal: str) -> bool:
        if self._session is None:
            return False
        dialog = BreakGlassDialog(self._vault, self._session, study.study_uid, refusal, self)
        if not dialog.exec():
            return False
        self.refresh()  # the grant shows this patient's details to the reader
        return not self.locked

    def _list_series(self, study_uid: str) -> None:
        if study_uid == self._listed_study:
            return
        series = self._ask(self._vault.reading.series, self._session, study_uid)
        self._series = series or []
        self._listed_study = study_uid if series is not None else None
        self.browser.set_series(self._series)
        study = self._studies.get(study_uid)
        if study is not None and series is not None:
            listed = _count(len(series), "series", "series")
            self.statusBar().showMessage(f"{iso_date(study.study_date)} {study.description} · {listed}",
                                         STATUS_SECONDS * 1000)
            self._thumbnail_ticket += 1
            self._thumbnail_timer.start()

    def _load_thumbnails(self) -> None:
        """Thumbnails of the listed study's series, decoded in the background (one audited access)."""
        session, study_uid, ticket = self._session, self._listed_study, self._thumbnail_ticket
        if session is None or study_uid is None or self.locked \
                or not permits(session.user.role, Action.VIEW_IMAGES):
            return
        # A failure (the session ended meanwhile, a busy vault) only means no thumbnails: opening
        # the series reports it plainly.
        in_background("thumbnails", lambda: self._vault.reading.thumbnails(session, study_uid),
                      lambda pictures, _error: self._thumbnails_ready.post(ticket, study_uid, pictures or {}))

    def _show_thumbnails(self, ticket: int, study_uid: str, pictures: dict[str, np.ndarray]) -> None:
        # An answer for a study no longer listed, or from before a lock or another user's login,
        # is dropped: it must never appear on someone else's screen.
        if ticket == self._thumbnail_ticket and study_uid == self._listed_study and not self.locked:
            self.browser.set_thumbnails(pictures)

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

    def help_text(self) -> str:
        """The viewports' controls, the browser's, and every shortcut of the window's own actions."""
        shortcuts = sorted({f"{action.shortcut().toString()}: {action.text().replace('&', '')}"
                            for action in self.findChildren(QAction) if not action.shortcut().isEmpty()})
        return "\n".join(["In a viewport:", *CONTROLS_HELP, "", "Study browser:", *BROWSER_HELP, "",
                          "Window:", *shortcuts])

    def _show_controls(self) -> None:
        QMessageBox.information(self, "Viewer controls", self.help_text())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._session is not None and not self.locked and not self.idle_watch.running:
            self.idle_watch.start()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.idle_watch.stop()
        self._close_3d()
        for viewport in self.grid.viewports:  # drop decoded pixels as soon as the window goes
            viewport.clear()
        super().closeEvent(event)
