"""Log in with a password and a TOTP code; the vault decides, the dialog shows its plain answer.

A new account's first login sets up the authenticator here too, and a login with a recovery code
must set up a new authenticator before the dialog hands out the session.
"""

from __future__ import annotations

from typing import cast

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QLineEdit, QVBoxLayout, QWidget

from app.errors import AuthenticatorNotSetUp, CustodianError
from app.security.sessions import Session
from app.ui.card_reader import ask_card_pin
from app.ui.code_source import say_where_codes_come_from
from app.ui.demo_hint import DemoCodes, DemoCodesLabel
from app.ui.enrolment_dialog import first_enrolment, required_reenrolment
from app.ui.forms import FormDialog, busy, code_edit, link_button, password_edit
from app.vault import Vault

REENROLMENT_CANCELLED = ("You logged in with a recovery code, so a new authenticator must be set up "
                         "before you can continue. You were logged out.")


class LoginDialog(FormDialog):
    """Accepted only once the vault has opened a usable session; ``session`` then holds it."""

    def __init__(self, vault: Vault, *, demo_codes: DemoCodes | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Custodian — Log in", "Custodian",
                         "Log in with your password and the code from your authenticator app.",
                         "Log in", parent=parent)
        self._vault = vault
        self.session: Session | None = None
        self.login_button = self.ok_button

        self.user_edit = self.add_field("User", QLineEdit())
        self.user_edit.setToolTip("Your Custodian user name")
        self.password_edit = self.add_field("Password", password_edit())
        self.code_edit = self.add_field("Code", code_edit(recovery=True), code=True)
        say_where_codes_come_from(self, self.code_edit, vault)
        self.card_reader = ask_card_pin(self, self.code_edit, vault.accounts.second_factor())

        self.first_login_button = link_button("First login: set up your authenticator…")
        self.first_login_button.setToolTip("For a new account: enter your user name and password, then "
                                           "set up the authenticator app")
        self.first_login_button.clicked.connect(self._first_login)
        layout = cast(QVBoxLayout, self.layout())  # the one FormDialog sets
        layout.insertWidget(layout.indexOf(self.error_label), self.first_login_button, 0,
                            Qt.AlignmentFlag.AlignLeft)
        for edit in (self.user_edit, self.password_edit):
            edit.textChanged.connect(self._update_first_login)
        self._update_first_login()

        self.demo_label = DemoCodesLabel(demo_codes)
        layout.insertWidget(layout.indexOf(self.buttons), self.demo_label)
        self.user_edit.setFocus()  # the reader types the name at once

    def submit(self) -> bool:
        try:
            with busy():
                _, session = self._vault.accounts.login(self.user_edit.text().strip(),
                                                        self.password_edit.text(), self.code_edit.text())
        except AuthenticatorNotSetUp:  # a directory user new at this station: set it up now
            self._first_login()
            return False
        usable = required_reenrolment(self._vault, session, self)
        if usable is None:
            self.refuse(REENROLMENT_CANCELLED)
            return False
        self._keep(usable)
        return True

    def _first_login(self) -> None:
        try:
            with busy():
                enrolment = self._vault.accounts.begin_first_enrolment(self.user_edit.text().strip(),
                                                              self.password_edit.text())
        except CustodianError as exc:
            self.refuse(str(exc))
            return
        session = first_enrolment(self._vault, enrolment, self)
        if session is not None:
            self._keep(session)
            self.done(QDialog.DialogCode.Accepted)

    def _keep(self, session: Session) -> None:
        self.session = session
        self.password_edit.clear()
        self.code_edit.clear()

    def _update_first_login(self) -> None:
        self.first_login_button.setEnabled(bool(self.user_edit.text().strip() and self.password_edit.text()))
