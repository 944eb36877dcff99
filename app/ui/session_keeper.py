"""The reading window's session and its lock, apart from what the window reads and hangs.

Automatic logoff (HIPAA 164.312(a)(2)(iii)): after the idle limit without input, or on Ctrl+L,
the window locks. Every patient detail and pixel is dropped at once, only identifiers of what was
open are kept (layout, which series where, slice, window), and the lock screen asks the same user
back in; unlocking reads it all again through the vault. Logging in as someone else ends the
locked session and starts with an empty window. Switch user puts the work away the same way while
the login is asked for, and ends nothing until someone logs in: Cancel goes straight back to it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication, QDialog, QLabel, QStackedWidget, QToolTip, QWidget

from app.errors import CustodianError, NotAuthenticated
from app.security.accounts import User
from app.security.sessions import Session
from app.ui.account_dialogs import ChangePasswordDialog
from app.ui.card_reader import lock_on_removal
from app.ui.clipboard_guard import ClipboardGuard
from app.ui.enrolment_dialog import reenrol
from app.ui.idle_watch import IdleWatch
from app.ui.lock_screen import LockScreen
from app.ui.login_dialog import LoginDialog
from app.ui.viewport_grid import GridState
from app.vault import Vault

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

LOCKED_TITLE = "Custodian — locked"


@dataclass(frozen=True)
class LockedWork:
    """What was open when the window locked: identifiers to read it back with, nothing shown."""

    study_uid: str | None
    filter_text: str
    grid: GridState


class SessionKeeper(QObject):
    """The window's session: lock and unlock, switch user, log out and log in again, and the
    user's own password and authenticator.

    It shows either ``workspace`` or the lock screen as the window's central widget; the window
    drops and reads back the work itself (``put_away``, ``resume``). ``idle_limit`` (seconds)
    overrides the vault's inactivity limit for whoever is logged in.
    """

    def __init__(self, window: MainWindow, vault: Vault, session: Session, workspace: QWidget, *,
                 idle_limit: float | None, demo_codes: Callable[[], dict[str, str]] | None) -> None:
        super().__init__(window)
        self._window = window
        self._vault = vault
        self._session: Session | None = session
        self._idle_limit = idle_limit
        self._demo_codes = demo_codes
        self._locked_work: LockedWork | None = None
        self._workspace = workspace
        self.lock_screen = LockScreen(vault, demo_codes=demo_codes)
        self._pages = QStackedWidget()
        self._pages.addWidget(workspace)
        self._pages.addWidget(self.lock_screen)
        window.setCentralWidget(self._pages)
        self.idle_watch = IdleWatch(self._limit_for(session.user), self)
        self._clipboard = ClipboardGuard(self)
        self.idle_watch.idle.connect(self.lock)
        self.idle_watch.active.connect(self._keep_alive)
        self.lock_screen.unlocked.connect(self._unlocked)
        self.lock_screen.ended.connect(self._session_ended)
        self.lock_screen.loginRequested.connect(self.log_in_again)
        self.card_reader = lock_on_removal(self, vault.accounts.second_factor())  # (a card site's)
        # A directory user's offline login says so for as long as the directory cannot be reached.
        self.offline_notice = QLabel("Offline login: the directory cannot be reached")
        self.offline_notice.setToolTip("You logged in with this station's record of your last login. The "
                                       "directory is asked again when it answers; the session ends then "
                                       "if it no longer lets you in.")
        window.statusBar().addPermanentWidget(self.offline_notice)
        self.offline_notice.hide()

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

    @property
    def put_away(self) -> int:
        """How many viewports' series the lock put away, to be read back at unlock."""
        return sum(view is not None for view in self._locked_work.grid.views) if self._locked_work else 0

    def begin(self, session: Session) -> None:
        """Work in ``session``: the window fits its user's role, the idle limit theirs."""
        self._session = session
        self._window.fit_role(session.user)
        self.idle_watch.limit = self._limit_for(session.user)
        self._window.setWindowTitle(self._title())
        self.offline_notice.setVisible(session.offline)

    def watch_idle(self) -> None:
        """Count idle time once the window shows, unless it is locked or logged out."""
        if self._session is not None and not self.locked and not self.idle_watch.running:
            self.idle_watch.start()

    def lock(self, notice: str = "") -> None:
        """Hide every patient detail at once; the lock screen asks the same user back in."""
        if self._session is None or self.locked:
            return
        self._locked_work = self._blank()
        self.lock_screen.lock(self._session, notice)

    def switch_user(self) -> None:
        """Let someone else log in, the work hidden meanwhile; their login ends this session. Cancel
        returns to the work as it was, unless the login sat open past the idle limit (then the
        reader unlocks as after any lock) or the vault ended the session meanwhile."""
        session, asked = self._session, time.monotonic()
        if session is None or self.locked:
            return
        self.lock()
        if self.log_in_again() or time.monotonic() - asked >= self.idle_limit:
            return
        try:
            self._vault.accounts.whoami(session)
        except CustodianError as exc:
            self.lock_screen.lock(session, str(exc))
            return
        self._unlocked(session)

    def log_out(self) -> None:
        """End the session; the login dialog offers the next one, else the window stays on the
        logged-out page with its "Log in…" button."""
        if self._session is None:
            return
        self._blank()
        self._end_session()
        self.lock_screen.end("You have logged out.")
        self.log_in_again()

    def log_in_again(self) -> bool:
        """A login from the lock screen: the locked session (if any) ends, the new one starts empty."""
        dialog = LoginDialog(self._vault, demo_codes=self._demo_codes, parent=self._window)
        if not dialog.exec() or dialog.session is None:
            return False
        self._end_session()
        self._locked_work = None
        self.begin(dialog.session)
        self._show_workspace()
        self._window.refresh()
        return True

    def change_password(self) -> None:
        session = self._session
        if session is not None and ChangePasswordDialog(self._vault, session, self._window).exec():
            self._window.show_status("Your password was changed.")

    def set_up_authenticator(self) -> None:
        """A new authenticator and recovery codes; the vault hands back the updated session."""
        session = self._window.ask(reenrol, self._vault, self._session, self._window)
        if session is not None:
            self._session = session
            self._window.show_status("Your new authenticator is set up; the old one and its recovery codes "
                                     "no longer work.")

    def _limit_for(self, user: User) -> float:
        if self._idle_limit is not None:
            return self._idle_limit
        return self._vault.accounts.inactivity_limit(user)

    def _title(self) -> str:
        user = self._session.user if self._session else None
        return f"Custodian — {user.name} ({user.role.value})" if user else LOCKED_TITLE

    def _blank(self) -> LockedWork:
        """Drop everything that shows a patient and switch to the lock screen; returns what was open."""
        for dialog in self._window.findChildren(QDialog):
            if dialog.isVisible():
                dialog.reject()  # a dialog's own exec() returns as cancelled
        popup = QApplication.activePopupWidget()
        while popup is not None and popup.close():  # an open menu
            popup = QApplication.activePopupWidget()
        QToolTip.hideText()  # a table cell's tooltip repeats the patient's name
        work = self._window.put_away()
        self._clipboard.clear()
        self.idle_watch.stop()
        self._set_workspace(False)
        self._window.setWindowTitle(LOCKED_TITLE)
        return work

    def _show_workspace(self) -> None:
        self._set_workspace(True)
        self._window.setWindowTitle(self._title())
        self.idle_watch.start()

    def _set_workspace(self, shown: bool) -> None:
        self._pages.setCurrentWidget(self._workspace if shown else self.lock_screen)
        self._window.window_actions.set_available(shown)

    def _unlocked(self, session: Session) -> None:
        self._session = session
        self.offline_notice.setVisible(session.offline)
        work, self._locked_work = self._locked_work, None
        self._show_workspace()
        self._window.refresh()
        if work is not None:
            self._window.resume(work)

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
            self.offline_notice.setVisible(self._vault.accounts.whoami(self._session).offline)
        except NotAuthenticated as exc:
            self.lock(str(exc))
