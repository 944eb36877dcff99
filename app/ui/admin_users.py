"""The administrator's user screen: list accounts, add one (handing its authenticator over), disable one.

Only shown to roles that may manage users; the vault refuses everyone else anyway.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QLineEdit,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError
from app.security.accounts import Enrolment, User
from app.security.roles import Role
from app.security.sessions import Session
from app.ui.account_dialogs import MISMATCH, new_password_fields
from app.ui.enrolment_dialog import EnrolmentDialog
from app.ui.forms import FormDialog, busy, error_label, heading_label, hint_label, show_message
from app.ui.study_list import UID_ROLE, Column, RecordTableModel, record_table
from app.vault import Vault


class UserTableModel(RecordTableModel):
    columns = (
        Column("Name", lambda u: u.name, lambda u: u.name.casefold(), "User name", stretch=True),
        Column("Role", lambda u: u.role.value, lambda u: u.role.value, "What the user may do"),
        Column("State", lambda u: "Disabled" if u.disabled else "Active",
               lambda u: u.disabled, "Disabled accounts cannot log in"),
        Column("Authenticator", lambda u: "Set up" if u.enrolled else "Not yet",
               lambda u: u.enrolled, "Whether the user has logged in with an authenticator code"),
    )

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(lambda u: u.name, parent)


class AddUserDialog(FormDialog):
    """Accepted once the vault added the account; ``enrolment`` then holds its authenticator."""

    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("Custodian — Add user", "Add user",
                         "The new user logs in with this password and the authenticator shown next.",
                         "Add user", parent=parent)
        self._vault = vault
        self._session = session
        self.enrolment: Enrolment | None = None
        self.name_edit = self.add_field("User name", QLineEdit())
        self.name_edit.setToolTip("Letters, digits, dots, dashes or underscores")
        self.full_name_edit = self.add_field("Full name", QLineEdit(), required=False)
        self.full_name_edit.setToolTip("The person's name, e.g. Jane Smith: opening a patient with the "
                                       "same surname raises an alert for the privacy officer")
        self.role_box = QComboBox()
        for role in Role:
            self.role_box.addItem(role.value, role.value)
        self.form.addRow("Role", self.role_box)
        self.password_edit, self.repeat_edit = new_password_fields(self)

    def submit(self) -> bool:
        if self.password_edit.text() != self.repeat_edit.text():
            self.refuse(MISMATCH)
            return False
        role = Role(self.role_box.currentData())
        with busy():
            self.enrolment = self._vault.admin.add_user(self._session, self.name_edit.text().strip(), role,
                                                  self.password_edit.text(), self.full_name_edit.text())
        return True


class AdminUsersDialog(QDialog):
    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._session = session
        self._users: list[User] = []
        self.setWindowTitle("Custodian — Users")
        self.resize(620, 420)

        self.model = UserTableModel(self)
        self.table = record_table(self.model, UserTableModel.columns, "Custodian's user accounts")
        self.error_label = error_label()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.add_button = buttons.addButton("Add user…", QDialogButtonBox.ButtonRole.ActionRole)
        self.disable_button = buttons.addButton("Disable user…", QDialogButtonBox.ButtonRole.ActionRole)
        self.disable_button.setToolTip("The user can no longer log in and their sessions end at once")
        buttons.rejected.connect(self.reject)
        self.add_button.clicked.connect(self.add_user)
        self.disable_button.clicked.connect(self.disable_user)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(heading_label("Users"))
        layout.addWidget(hint_label("Accounts are never deleted, so the audit trail keeps its names: "
                                    "disable an account that is no longer needed."))
        layout.addWidget(self.table)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)
        self.table.selectionModel().currentRowChanged.connect(self._update_disable)
        self.refresh()

    def refresh(self) -> None:
        try:
            self._users = self._vault.admin.list_users(self._session)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return
        self.model.set_records(self._users)
        self.table.resizeColumnsToContents()
        self._update_disable()

    def selected(self) -> User | None:
        index = self.table.currentIndex()
        name = index.data(UID_ROLE) if index.isValid() else None
        return next((user for user in self._users if user.name == name), None)

    def select(self, name: str) -> None:
        row = self.model.row_of(name)
        if row is not None:
            self.table.selectRow(row)

    def add_user(self) -> None:
        dialog = AddUserDialog(self._vault, self._session, self)
        if not dialog.exec() or dialog.enrolment is None:
            return
        show_message(self.error_label, "")
        self.refresh()
        self.select(dialog.enrolment.user.name)
        EnrolmentDialog(dialog.enrolment, None, heading=f"Authenticator for {dialog.enrolment.user.name}",
                        parent=self).exec()

    def disable_user(self) -> None:
        user = self.selected()
        if user is None:
            return
        answer = QMessageBox.question(
            self, "Disable user", f"Disable {user.name}? They can no longer log in, and their open "
            "sessions end at once.", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            with busy():
                self._vault.admin.disable_user(self._session, user.name)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return
        show_message(self.error_label, "")
        self.refresh()
        self.select(user.name)

    def _update_disable(self) -> None:
        user = self.selected()
        self.disable_button.setEnabled(user is not None and not user.disabled
                                       and user.id != self._session.user.id)
