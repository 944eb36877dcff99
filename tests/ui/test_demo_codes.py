"""Demo homes show the locked user's current authenticator code on the lock screen (the login
dialog's hint is tested with the dialog), so that a newcomer can unlock; a real home shows none."""

from __future__ import annotations

from collections.abc import Callable

from pytestqt.qtbot import QtBot

from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import Reader, shown_texts


def test_the_lock_screen_shows_the_locked_users_current_demo_code_and_it_unlocks(
        qtbot: QtBot, vault: Vault, reader: Reader, open_window: Callable[..., MainWindow]) -> None:
    codes = {"someone": "111111", reader.name: reader.next_code()}  # (the login spent the current one)
    window = open_window(reader.session, demo_codes=lambda: dict(codes))
    window.lock()
    screen = window.lock_screen
    assert screen.demo_label.isVisible()
    assert screen.demo_label.text() == f"Demo vault — current code: {reader.name} {codes[reader.name]}"
    assert "111111" not in " ".join(shown_texts(window)), "only the locked user's code"

    code = screen.demo_label.text().rsplit(" ", 1)[1]  # as a newcomer reads it off the screen
    screen.password_edit.setText(reader.password)
    screen.code_edit.setText(code)
    screen.unlock()
    assert not window.locked


def test_a_real_home_shows_no_codes_on_the_lock_screen(
        qtbot: QtBot, reader: Reader, open_window: Callable[..., MainWindow]) -> None:
    window = open_window(reader.session)
    window.lock()
    assert not window.lock_screen.demo_label.isVisible()
    assert not [t for t in shown_texts(window) if "Demo vault" in t]
