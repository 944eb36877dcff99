"""Automatic logoff and the lock screen, against the real vault, checked on text and pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from app.errors import NotAuthenticated
from app.imaging.display import Window
from app.security import totp
from app.security.accounts import LOGIN_FAILED, Enrolment
from app.ui import idle_watch
from app.ui.login_dialog import LoginDialog
from app.ui.main_window import MainWindow
from app.ui.session_keeper import LOCKED_TITLE
from app.vault import Vault
from tests.ui.conftest import USER_PASSWORD, Reader, answer, shown_texts, unused_code, white_pixels

PHI = ("Doe", "Jane", "P1", "1960-01-01", "19600101")
Grab = Callable[[QWidget], np.ndarray]
OpenWindow = Callable[..., MainWindow]


def reading(qtbot: QtBot, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset],
            **options: object) -> MainWindow:
    """The reader's window, active, showing the CT of Doe^Jane."""
    window = open_window(reader.session, **options)
    with qtbot.waitActive(window):
        window.activateWindow()
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    return window


def unlock(qtbot: QtBot, window: MainWindow, password: str, code: str) -> None:
    screen = window.lock_screen
    screen.password_edit.setText(password)
    qtbot.keyClicks(screen.code_edit, code)
    qtbot.mouseClick(screen.unlock_button, Qt.MouseButton.LeftButton)


def assert_no_phi(window: MainWindow) -> None:
    texts = shown_texts(window)
    leaks = [(part, text) for part in PHI for text in texts if part in text]
    assert leaks == []


def test_idle_limit_locks_and_nothing_of_the_patient_remains(
        qtbot: QtBot, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset], grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets, idle_limit=60)
    window.browser.filter_edit.setText("Doe")
    QApplication.clipboard().setText("Doe, Jane P1")  # copied while working in Custodian
    before = grab_pixels(window)
    assert white_pixels(before) > 50, "the phantom's bone shows before the lock"
    assert any("Doe" in text for text in shown_texts(window))

    window.idle_limit = 0.3
    qtbot.waitUntil(lambda: window.locked, timeout=3000)

    assert window.windowTitle() == LOCKED_TITLE
    assert window.lock_screen.isVisible() and window.lock_screen.user_label.text() == reader.name
    assert_no_phi(window)
    assert window.browser.study_model.rowCount() == 0 and window.browser.series_model.rowCount() == 0
    assert all(viewport.view.series is None for viewport in window.grid.viewports), "pixels dropped"
    assert window.statusBar().currentMessage() == ""
    assert QApplication.clipboard().text() == ""
    after = grab_pixels(window)
    assert white_pixels(after) == 0, "no bone pixel of the phantom on the lock screen"
    rect = window.grid.active.view.image_rect()
    assert rect.isNull(), "the view has no image to draw"
    assert not window.menuBar().isVisible(), "no menu reaches the work behind the lock"


def test_input_postpones_the_lock_and_ctrl_l_locks_at_once(
        qtbot: QtBot, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset]):
    window = reading(qtbot, open_window, reader, ct_datasets, idle_limit=0.6)
    view = window.grid.active.view
    for _ in range(10):  # one second of reading, a key every 0.1 s
        qtbot.wait(100)
        qtbot.keyClick(view, Qt.Key.Key_Down if view.index < 9 else Qt.Key.Key_Home)
    assert not window.locked
    qtbot.waitUntil(lambda: window.locked, timeout=3000)

    unlock(qtbot, window, reader.password, reader.next_code())
    assert not window.locked
    assert window.lock_screen.password_edit.text() == window.lock_screen.code_edit.text() == ""  # none kept
    window.idle_limit = 60
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keySequence(window, "Ctrl+L")
    assert window.locked and window.windowTitle() == LOCKED_TITLE


def test_unlock_restores_layout_series_slices_and_windows(
        qtbot: QtBot, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset], grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets, layout="1x2", idle_limit=60)
    left, right = window.grid.visible_viewports()
    window.sync_action.setChecked(False)  # two independent slices of one series
    window.grid.set_active(right)
    assert window.load_series(ct_datasets[0].SeriesInstanceUID)
    left.view.set_index(6)
    right.view.set_index(3)
    right.view.set_window(Window(300, 1500))
    window.browser.filter_edit.setText("Jane")
    shown = [grab_pixels(left.view), grab_pixels(right.view)]
    window.lock()
    assert window.locked and left.view.series is None and right.view.series is None
    assert window.browser.filter_edit.text() == ""

    unlock(qtbot, window, reader.password, unused_code(reader.secret))
    assert window.locked
    assert window.lock_screen.error_label.isVisible()
    assert window.lock_screen.error_label.text() == LOGIN_FAILED
    assert window.lock_screen.code_edit.text() == "", "a refused code is cleared"
    assert_no_phi(window)

    unlock(qtbot, window, reader.password, reader.next_code())

    assert not window.locked
    assert window.windowTitle() == f"Custodian — {reader.name} (radiologist)"
    assert window.grid.layout_name == "1x2" and window.layout_actions["1x2"].isChecked()
    assert left.series_uid == right.series_uid == ct_datasets[0].SeriesInstanceUID
    assert (left.view.index, right.view.index) == (6, 3)
    assert left.view.chosen_window is None and left.view.window == Window(40, 400)
    assert right.view.chosen_window == Window(300, 1500)
    assert window.grid.active is right
    assert window.browser.current_study_uid() == ct_datasets[0].StudyInstanceUID
    assert window.browser.filter_edit.text() == "Jane"
    np.testing.assert_array_equal(grab_pixels(left.view), shown[0])
    np.testing.assert_array_equal(grab_pixels(right.view), shown[1])
    assert window.menuBar().isVisible()


def test_switch_user_ends_the_first_session_and_starts_empty(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset],
        new_user: Callable[[], Enrolment], grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets, idle_limit=60)
    window.lock()
    other = new_user()
    name = other.user.name

    def log_in(dialog: LoginDialog) -> None:
        dialog.user_edit.setText(name)
        dialog.password_edit.setText(USER_PASSWORD)
        dialog.code_edit.setText(totp.current_code(other.totp_secret))
        qtbot.mouseClick(dialog.login_button, Qt.MouseButton.LeftButton)

    answer(LoginDialog, log_in)
    qtbot.mouseClick(window.lock_screen.login_button, Qt.MouseButton.LeftButton)

    assert not window.locked
    assert window.session is not None and window.session.user.name == name
    assert window.windowTitle() == f"Custodian — {name} (radiologist)"
    assert window.user_menu.title() == f"&User {name}"
    with pytest.raises(NotAuthenticated):
        vault.accounts.whoami(reader.session)
    assert all(viewport.series_uid is None and viewport.view.series is None
               for viewport in window.grid.viewports)
    assert white_pixels(grab_pixels(window.grid)) == 0, "no image of the first reader's patient"
    assert window.browser.study_model.rowCount() > 0, "the new reader's own study list"


def test_an_ended_session_is_said_plainly_and_a_fresh_login_offered(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset]):
    window = reading(qtbot, open_window, reader, ct_datasets, idle_limit=60)
    window.lock()
    vault.accounts.logout(reader.session)  # e.g. from the command line, or the absolute limit

    unlock(qtbot, window, reader.password, reader.next_code())

    screen = window.lock_screen
    assert window.locked and window.session is None
    assert screen.title_label.text() == "Session ended"
    assert screen.hint_label.text().startswith("The session has ended: log in again.")
    assert not screen.fields.isVisible() and not screen.unlock_button.isVisible()
    assert screen.login_button.isVisible() and screen.login_button.text() == "Log in…"
    assert_no_phi(window)


def test_log_out_ends_the_session_and_stays_on_the_logged_out_page_when_nobody_logs_in(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset]):
    window = reading(qtbot, open_window, reader, ct_datasets, idle_limit=60)
    answer(LoginDialog, lambda dialog: dialog.reject())

    window.user_menu.logout_action.trigger()

    assert window.isVisible() and window.locked and window.session is None, "Cancel closes nothing"
    screen = window.lock_screen
    assert screen.title_label.text() == "Session ended" and screen.hint_label.text() == "You have logged out."
    assert screen.login_button.isVisible() and screen.login_button.text() == "Log in…"
    with pytest.raises(NotAuthenticated):
        vault.accounts.whoami(reader.session)
    assert all(viewport.view.series is None for viewport in window.grid.viewports)
    assert_no_phi(window)


def test_input_after_the_vault_ended_the_session_locks_the_window(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset],
        monkeypatch: pytest.MonkeyPatch):
    window = reading(qtbot, open_window, reader, ct_datasets, idle_limit=60)
    vault.accounts.logout(reader.session)  # elsewhere: the command line, or an administrator
    monkeypatch.setattr(idle_watch, "HEARTBEAT_SECONDS", 0.0)

    qtbot.keyClick(window.grid.active.view, Qt.Key.Key_Down)

    qtbot.waitUntil(lambda: window.locked, timeout=2000)
    assert window.lock_screen.error_label.text() == "Not logged in."
    assert all(viewport.view.series is None for viewport in window.grid.viewports)
