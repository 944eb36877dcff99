"""Setting up the authenticator: first login, the forced re-enrolment after a recovery code, and
re-enrolment from the user menu; the QR code is checked module by module against the address."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import segno
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from app.errors import AuthenticationFailed
from app.security import totp
from app.security.accounts import Enrolment
from app.security.sessions import Session
from app.ui.enrolment_dialog import QR_BORDER, QR_SCALE, EnrolmentDialog
from app.ui.login_dialog import REENROLMENT_CANCELLED, LoginDialog
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import USER_PASSWORD, Reader, answer, image_array, unused_code


def secret_of(dialog: EnrolmentDialog) -> str:
    """The TOTP secret, read from the address the dialog shows (as an authenticator app would)."""
    return parse_qs(urlparse(dialog.uri_edit.text()).query)["secret"][0]


def assert_qr_encodes(dialog: EnrolmentDialog, text: str) -> None:
    """Every module of the drawn QR code is dark exactly where the symbol for ``text`` is."""
    pixmap = dialog.qr_label.pixmap()
    assert not pixmap.isNull()
    pixels = image_array(pixmap.toImage())[..., 0]
    matrix = np.array(segno.make(text, error="m").matrix, dtype=bool)
    centres = (np.arange(matrix.shape[0]) + QR_BORDER) * QR_SCALE + QR_SCALE // 2
    assert pixels.shape == ((matrix.shape[0] + 2 * QR_BORDER) * QR_SCALE,) * 2
    np.testing.assert_array_equal(pixels[np.ix_(centres, centres)] < 128, matrix)


def confirm(qtbot: QtBot, seen: list[EnrolmentDialog] | None = None,
            wrong_first: bool = False) -> Callable[[EnrolmentDialog], None]:
    """Answers an enrolment dialog as its owner would: scan, then type the app's code."""
    def act(dialog: EnrolmentDialog) -> None:
        assert_qr_encodes(dialog, dialog.enrolment.totp_uri)
        assert dialog.uri_edit.text() == dialog.enrolment.totp_uri
        assert [label.text() for label in dialog.code_labels] == dialog.enrolment.recovery_codes
        assert len(set(dialog.enrolment.recovery_codes)) == 10
        if seen is not None:
            seen.append(dialog)
        secret = secret_of(dialog)
        if wrong_first:
            qtbot.keyClicks(dialog.code_edit, unused_code(secret))
            qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
            assert dialog.isVisible() and dialog.error_label.isVisible()
            assert dialog.error_label.text().startswith("That code does not match")
            assert dialog.code_edit.text() == ""
        qtbot.keyClicks(dialog.code_edit, totp.current_code(secret))
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)

    return act


def test_first_login_sets_up_the_authenticator_and_opens_a_session(
        qtbot: QtBot, vault: Vault, admin_session: Session, fresh_user: tuple[str, str, str]):
    name, password, _ = fresh_user
    dialog = LoginDialog(vault)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.first_login_button.isEnabled(), "needs the user name and password first"
    qtbot.keyClicks(dialog.user_edit, name)
    qtbot.keyClicks(dialog.password_edit, password)
    seen: list[EnrolmentDialog] = []
    answer(EnrolmentDialog, confirm(qtbot, seen, wrong_first=True))

    qtbot.mouseClick(dialog.first_login_button, Qt.MouseButton.LeftButton)

    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.session is not None and dialog.session.user.name == name
    assert not dialog.session.needs_enrolment
    assert vault.accounts.whoami(dialog.session).user.name == name
    assert next(u for u in vault.admin.list_users(admin_session) if u.name == name).enrolled
    enrolment = seen[0]
    assert enrolment.qr_label.pixmap().isNull() and enrolment.uri_edit.text() == "", \
        "the secret is gone from the closed dialog"
    assert all(label.text() == "" for label in enrolment.code_labels)


def test_first_login_with_a_wrong_password_is_refused_plainly(qtbot: QtBot, vault: Vault,
                                                             fresh_user: tuple[str, str, str]):
    name, _, _ = fresh_user
    dialog = LoginDialog(vault)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.user_edit.setText(name)
    dialog.password_edit.setText("not the password at all")
    qtbot.mouseClick(dialog.first_login_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and dialog.session is None
    assert dialog.error_label.text().startswith("Login failed:")


@pytest.fixture
def recovery_login(qtbot: QtBot, vault: Vault, new_user: Callable[[], Enrolment]
                   ) -> Callable[[Callable[[EnrolmentDialog], None]], tuple[LoginDialog, Enrolment]]:
    """Logs a new user in with a recovery code, answering the re-enrolment with ``act``."""
    def log_in(act: Callable[[EnrolmentDialog], None]) -> tuple[LoginDialog, Enrolment]:
        enrolment = new_user()
        dialog = LoginDialog(vault)
        qtbot.addWidget(dialog)
        dialog.show()
        dialog.user_edit.setText(enrolment.user.name)
        dialog.password_edit.setText(USER_PASSWORD)
        dialog.code_edit.setText(enrolment.recovery_codes[3])
        answer(EnrolmentDialog, act)
        qtbot.mouseClick(dialog.login_button, Qt.MouseButton.LeftButton)
        return dialog, enrolment

    return log_in


def test_a_recovery_code_login_must_set_up_a_new_authenticator(qtbot: QtBot, vault: Vault, recovery_login):
    dialog, enrolment = recovery_login(confirm(qtbot))

    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.session is not None and not dialog.session.needs_enrolment
    assert vault.reading.studies(dialog.session) is not None, "the session may work now"
    with pytest.raises(AuthenticationFailed):  # the handed-over authenticator was replaced
        vault.accounts.login(enrolment.user.name, USER_PASSWORD, totp.current_code(enrolment.totp_secret))


def test_cancelling_the_forced_re_enrolment_logs_out(qtbot: QtBot, recovery_login):
    dialog, _ = recovery_login(lambda enrolment: enrolment.reject())

    assert dialog.isVisible() and dialog.session is None
    assert dialog.error_label.text() == REENROLMENT_CANCELLED


def test_set_up_authenticator_again_from_the_user_menu(qtbot: QtBot, vault: Vault, reader: Reader,
                                                       open_window: Callable[..., MainWindow]):
    window = open_window(reader.session)
    seen: list[EnrolmentDialog] = []
    answer(EnrolmentDialog, confirm(qtbot, seen))

    window.user_menu.reenrol_action.trigger()

    assert "new authenticator is set up" in window.statusBar().currentMessage()
    new_secret = parse_qs(urlparse(seen[0].enrolment.totp_uri).query)["secret"][0]
    assert new_secret != reader.secret
    window.lock()
    window.lock_screen.password_edit.setText(reader.password)
    window.lock_screen.code_edit.setText(totp.current_code(new_secret, time.time() + totp.STEP))
    qtbot.mouseClick(window.lock_screen.unlock_button, Qt.MouseButton.LeftButton)
    assert not window.locked, "the new authenticator's codes unlock"
