"""The login dialog against the real vault: refusals show the plain message, success a session."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from app.security import totp
from app.security.accounts import LOGIN_FAILED
from app.ui.login_dialog import LoginDialog
from app.vault import Vault
from tests.ui.conftest import unused_code


def fill(qtbot: QtBot, dialog: LoginDialog, name: str, password: str, code: str) -> None:
    for edit, text in ((dialog.user_edit, name), (dialog.password_edit, password), (dialog.code_edit, code)):
        edit.clear()
        qtbot.keyClicks(edit, text)


def test_wrong_code_is_refused_with_the_plain_message_then_a_right_one_logs_in(
        qtbot: QtBot, vault: Vault, fresh_user: tuple[str, str, str]):
    name, password, secret = fresh_user
    dialog = LoginDialog(vault)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.login_button.isEnabled(), "nothing to send yet"

    fill(qtbot, dialog, name, password, unused_code(secret))
    qtbot.mouseClick(dialog.login_button, Qt.MouseButton.LeftButton)

    assert dialog.isVisible() and dialog.session is None
    assert dialog.error_label.isVisible()
    assert dialog.error_label.text() == LOGIN_FAILED
    assert "Traceback" not in dialog.error_label.text()
    assert dialog.code_edit.text() == "", "a refused code is cleared for the next one"

    qtbot.keyClicks(dialog.code_edit, totp.current_code(secret))
    qtbot.keyClick(dialog.code_edit, Qt.Key.Key_Return)

    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.session is not None and dialog.session.user.name == name
    assert vault.accounts.whoami(dialog.session).user.name == name
    assert dialog.password_edit.text() == "", "the password does not linger in the widget"


def test_demo_codes_are_shown_and_kept_current(qtbot: QtBot, vault: Vault):
    calls = itertools.count(1)
    dialog = LoginDialog(vault, demo_codes=lambda: {"rad": f"{next(calls):06d}", "admin": "424242"})
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.demo_label.isVisible()
    assert dialog.demo_label.text() == "Demo vault — current codes: admin 424242 · rad 000001"
    qtbot.waitUntil(lambda: "rad 000002" in dialog.demo_label.text(), timeout=2500)


def test_no_demo_hint_for_real_vaults(qtbot: QtBot, vault: Vault):
    dialog = LoginDialog(vault)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.demo_label.isVisible()


def test_the_name_is_typed_at_once_and_the_first_paint_is_marked(qtbot: QtBot, vault: Vault, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys typed as soon as the login window shows go into the user name (no click first), and
    with a trace the window's first paint is a moment of it (the benchmarks time the real window)."""
    from app import trace
    from app.ui.first_paint import mark_first_paint

    timeline = tmp_path / "trace.jsonl"
    monkeypatch.setenv(trace.VARIABLE, str(timeline))
    dialog = LoginDialog(vault)
    qtbot.addWidget(dialog)
    mark_first_paint(dialog, "gui.login")
    dialog.show()
    dialog.activateWindow()
    qtbot.waitUntil(lambda: timeline.exists() and trace.first(trace.read(timeline), "gui.login") is not None)
    qtbot.keyClicks(dialog.focusWidget(), "rad")
    assert dialog.user_edit.text() == "rad"
    dialog.repaint()
    assert [m.event for m in trace.read(timeline)] == ["gui.login"], "marked once, at the first paint"
