"""Changing one's own password from the user menu; the vault's password rules speak for themselves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.errors import UsageError
from app.security.passwords import check_rules
from app.ui.account_dialogs import MISMATCH, ChangePasswordDialog
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import Reader, answer

NEW_PASSWORD = "lantern orchard quietly 42"


def rule_message(password: str, user: str) -> str:
    with pytest.raises(UsageError) as refused:
        check_rules(password, user)
    return str(refused.value)


def test_change_password_refuses_plainly_then_changes_it(qtbot: QtBot, vault: Vault, reader: Reader,
                                                        open_window: Callable[..., MainWindow]):
    window = open_window(reader.session)
    refusals: list[str] = []

    def fill(dialog: ChangePasswordDialog, current: str, new: str, repeat: str) -> None:
        for edit, text in ((dialog.current_edit, current), (dialog.new_edit, new),
                           (dialog.repeat_edit, repeat)):
            edit.setText(text)
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
        if dialog.isVisible():
            assert dialog.error_label.isVisible()
            refusals.append(dialog.error_label.text())

    def act(dialog: ChangePasswordDialog) -> None:
        fill(dialog, reader.password, "aaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaa")
        fill(dialog, reader.password, f"{reader.name} is my password", f"{reader.name} is my password")
        fill(dialog, reader.password, NEW_PASSWORD, NEW_PASSWORD + "!")
        fill(dialog, "not my password at all", NEW_PASSWORD, NEW_PASSWORD)
        fill(dialog, reader.password, NEW_PASSWORD, NEW_PASSWORD)

    answer(ChangePasswordDialog, act)
    window.user_menu.password_action.trigger()

    assert refusals == [rule_message("aaaaaaaaaaaaaaa", reader.name),
                        rule_message(f"{reader.name} is my password", reader.name),
                        MISMATCH, "The current password is not correct."]
    assert all("Traceback" not in text for text in refusals)
    assert window.statusBar().currentMessage() == "Your password was changed."
    _, session = vault.accounts.login(reader.name, NEW_PASSWORD, reader.next_code())
    assert session.user.name == reader.name
