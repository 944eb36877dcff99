"""The lock screen: the only page the window shows while locked, with nothing but the user's name.

The same user unlocks with password and authenticator code (the vault revives the session); a
refusal is shown plainly and the screen stays locked. When the vault says the session has ended,
the screen says so and offers a fresh login instead. Anyone may log in as someone else.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError, NotAuthenticated
from app.security.sessions import Session
from app.ui.code_source import RADIUS_CODE, RADIUS_UNLOCK, radius_site
from app.ui.demo_hint import DemoCodes, DemoCodesLabel
from app.ui.forms import busy, code_edit, error_label, heading_label, hint_label, password_edit, show_message
from app.vault import Vault

CARD_WIDTH = 400


class LockScreen(QWidget):
    """Emits ``unlocked`` with the revived session, ``ended`` when the vault says it is over, and
    ``loginRequested`` for a new login."""

    unlocked = Signal(object)  # Session
    ended = Signal()
    loginRequested = Signal()

    def __init__(self, vault: Vault, parent: QWidget | None = None, *,
                 demo_codes: DemoCodes | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._session: Session | None = None

        self.title_label = heading_label("Custodian is locked", 1.5)
        self.user_label = heading_label("", 1.15)
        self.user_label.setToolTip("The user whose session is locked")
        self.hint_label = hint_label()
        self.password_edit = password_edit()
        self.code_edit = code_edit()
        self.fields = QWidget()
        form = QFormLayout(self.fields)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.addRow("Password", self.password_edit)
        form.addRow("Code", self.code_edit)
        self.error_label = error_label()
        self.demo_label = DemoCodesLabel(demo_codes)  # demo homes only: the locked user's code

        self.login_button = QPushButton()
        self.unlock_button = QPushButton("Unlock")
        self.unlock_button.setDefault(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.login_button)
        buttons.addStretch(1)
        buttons.addWidget(self.unlock_button)

        card = QFrame()
        card.setObjectName("lock-card")
        card.setFixedWidth(CARD_WIDTH)
        inner = QVBoxLayout(card)
        inner.setContentsMargins(28, 24, 28, 24)
        inner.setSpacing(12)
        inner.addWidget(self.title_label)
        inner.addWidget(self.user_label)
        inner.addWidget(self.hint_label)
        inner.addWidget(self.fields)
        inner.addWidget(self.error_label)
        inner.addWidget(self.demo_label)
        inner.addLayout(buttons)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card)
        row.addStretch(1)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)

        for edit in (self.password_edit, self.code_edit):
            edit.textChanged.connect(self._update_unlock)
            edit.returnPressed.connect(self.unlock)
        self.unlock_button.clicked.connect(self.unlock)
        self.login_button.clicked.connect(self.loginRequested.emit)

    def lock(self, session: Session, notice: str = "") -> None:
        """Ask ``session``'s user to prove it is them; ``notice`` says why it locked early."""
        self._session = session
        self.user_label.setText(session.user.name)
        self.demo_label.show_user(session.user.name)
        radius_here = radius_site(self._vault)
        radius = radius_here and session.user.directory  # (a local account: its app's code)
        if radius_here:  # (a card site's reader words the field itself)
            self.code_edit.setPlaceholderText(RADIUS_CODE if radius else "6-digit code")
        self._show("Custodian is locked", RADIUS_UNLOCK if radius else
                   "Enter your password and authenticator code to continue.", notice)
        self.password_edit.setFocus()

    def end(self, message: str) -> None:
        """The session is over (time limit, logout, disabled account): offer a fresh login."""
        self._session = None
        self.demo_label.show_user("")
        self._show("Session ended", message)
        self.login_button.setFocus()

    def unlock(self) -> None:
        if self._session is None or not self.unlock_button.isEnabled():
            return
        try:
            with busy():
                session = self._vault.accounts.unlock(self._session, self.password_edit.text(),
                                                      self.code_edit.text())
        except NotAuthenticated as exc:
            self.end(f"{exc} Your open work was closed.")
            self.ended.emit()
            return
        except CustodianError as exc:  # AuthenticationFailed: a code is never accepted twice
            show_message(self.error_label, str(exc))
            self.code_edit.clear()
            self.code_edit.setFocus()
            return
        self.password_edit.clear()
        self.code_edit.clear()  # (a card's PIN is not kept in a hidden field until the next lock)
        self.unlocked.emit(session)

    def _show(self, title: str, hint: str, notice: str = "") -> None:
        locked = self._session is not None
        self.title_label.setText(title)
        self.hint_label.setText(hint)
        self.password_edit.clear()
        self.code_edit.clear()
        show_message(self.error_label, notice)
        for widget in (self.user_label, self.fields, self.unlock_button):
            widget.setVisible(locked)
        self.login_button.setText("Switch user…" if locked else "Log in…")
        self.login_button.setToolTip("Log in as someone else: this session ends and its work is closed"
                                     if locked else "Start a new session")
        self.login_button.setDefault(not locked)
        self._update_unlock()

    def _update_unlock(self) -> None:
        self.unlock_button.setEnabled(bool(self.password_edit.text() and self.code_edit.text().strip()))

