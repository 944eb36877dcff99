"""The reader's own password: current, new, and the new one again; the vault applies the rules."""

from __future__ import annotations

from PySide6.QtWidgets import QLineEdit, QWidget

from app.security.passwords import MIN_LENGTH
from app.security.sessions import Session
from app.ui.forms import FormDialog, busy, password_edit
from app.vault import Vault

MISMATCH = "The two new passwords are not the same."


def new_password_fields(dialog: FormDialog) -> tuple[QLineEdit, QLineEdit]:
    """A new password and its repetition, as the password and add-user dialogs ask for them."""
    new = dialog.add_field("New password", password_edit(f"At least {MIN_LENGTH} characters; a few "
                                                         "unrelated words make a strong one"))
    repeat = dialog.add_field("Repeat", password_edit("The new password once more"))
    return new, repeat


class ChangePasswordDialog(FormDialog):
    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("Custodian — Change password", "Change password",
                         f"Use at least {MIN_LENGTH} characters. Common passwords and ones containing "
                         "your user name are refused.", "Change password", parent=parent)
        self._vault = vault
        self._session = session
        self.current_edit = self.add_field("Current password", password_edit("Your password now"))
        self.new_edit, self.repeat_edit = new_password_fields(self)

    def submit(self) -> bool:
        if self.new_edit.text() != self.repeat_edit.text():
            self.refuse(MISMATCH)
            return False
        with busy():
            self._vault.accounts.change_password(self._session, self.current_edit.text(),
                                                 self.new_edit.text())
        for edit in (self.current_edit, self.new_edit, self.repeat_edit):
            edit.clear()
        return True
