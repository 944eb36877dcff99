"""The login dialog for directory users, against the real slapd and FreeRADIUS peers
(tests/security/test_radius.py starts them): a first login at this station sets up the
authenticator (the QR code) straight from "Log in", and where the site's MFA server checks the
codes over RADIUS the dialog says so, and says plainly when it refuses a code or does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from app.security import radius
from app.security.roles import Role
from app.ui.code_source import RADIUS_CODE, RADIUS_INTRO, RADIUS_UNLOCK
from app.ui.enrolment_dialog import EnrolmentDialog
from app.ui.lock_screen import LockScreen
from app.ui.login_dialog import LoginDialog
from app.vault.directory import RADIUS_REFUSED
from tests.conftest import VaultEnv, make_env
from tests.peers.radius import SECRET, free_udp_port
from tests.peers.slapd import SERVICE_PASSWORD, site_directory
from tests.security.test_radius import CODES, PASSWORDS, WRONG, peers, radius_config  # noqa: F401  (fixture)
from tests.ui.conftest import answer, image_array
from tests.ui.test_enrolment import confirm


@pytest.fixture
def env(tmp_path: Path) -> Iterator[VaultEnv]:
    e = make_env(tmp_path / "home")
    yield e
    e.vault.close()


def login_dialog(qtbot: QtBot, env: VaultEnv, name: str) -> LoginDialog:
    dialog = LoginDialog(env.vault)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.user_edit.setText(name)
    dialog.password_edit.setText(PASSWORDS[name])
    return dialog


def log_in(qtbot: QtBot, dialog: LoginDialog, code: str) -> None:
    dialog.code_edit.setText(code)
    qtbot.mouseClick(dialog.login_button, Qt.MouseButton.LeftButton)


def test_a_directory_users_first_login_here_sets_up_the_authenticator(qtbot: QtBot, env: VaultEnv,
                                                                       peers) -> None:  # noqa: F811
    server, site, _ = peers
    env.vault.admin.set_directory(env.login("admin"), site_directory(server, site), SERVICE_PASSWORD)
    dialog = login_dialog(qtbot, env, "alice")
    assert dialog.intro_label.text().endswith("the code from your authenticator app.")  # (not RADIUS)
    seen: list[EnrolmentDialog] = []
    answer(EnrolmentDialog, confirm(qtbot, seen))  # checks the QR code module by module
    log_in(qtbot, dialog, "123456")  # no authenticator here yet: whatever was typed, it is set up now
    assert seen and seen[0].enrolment.user.name == "alice"
    assert dialog.result() == QDialog.DialogCode.Accepted and dialog.session is not None
    assert dialog.session.user.directory and dialog.session.user.role is Role.RADIOLOGIST
    assert env.vault.reading.studies(dialog.session) is not None


def test_radius_codes_are_asked_for_and_refused_as_the_hospitals(qtbot: QtBot, env: VaultEnv, peers,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    admin = env.login("admin")
    env.vault.admin.set_directory(admin, radius_config(peers), SERVICE_PASSWORD, SECRET)
    dialog = login_dialog(qtbot, env, "alice")
    assert dialog.intro_label.text() == RADIUS_INTRO and dialog.code_edit.placeholderText() == RADIUS_CODE
    # the whole phrase is drawn in the empty field: ink reaches as far as the text's own width
    ink = image_array(dialog.code_edit.grab().toImage()).max(axis=2) > 110
    drawn = np.flatnonzero(ink.any(axis=0))
    assert drawn[-1] - drawn[0] >= 0.9 * dialog.code_edit.fontMetrics().horizontalAdvance(RADIUS_CODE)

    log_in(qtbot, dialog, WRONG)
    assert dialog.isVisible() and dialog.error_label.text() == RADIUS_REFUSED
    monkeypatch.setattr(radius, "TIMEOUT", 0.2)
    env.vault.admin.set_directory(admin, radius_config(peers, f"127.0.0.1:{free_udp_port()}"),
                                  SERVICE_PASSWORD, SECRET)
    log_in(qtbot, dialog, CODES["alice"])
    assert dialog.isVisible() and dialog.error_label.text().startswith(
        "The hospital's authenticator (the RADIUS server at 127.0.0.1:")
    assert "did not answer, so the code could not be checked" in dialog.error_label.text()
    env.vault.admin.set_directory(admin, radius_config(peers), SERVICE_PASSWORD, SECRET)
    log_in(qtbot, dialog, CODES["alice"])
    assert dialog.result() == QDialog.DialogCode.Accepted and dialog.session is not None
    assert dialog.session.user.name == "alice" and dialog.session.user.directory
    screen = LockScreen(env.vault)  # the lock screen says it too, for a directory user only
    qtbot.addWidget(screen)
    screen.lock(dialog.session)
    assert screen.hint_label.text() == RADIUS_UNLOCK and screen.code_edit.placeholderText() == RADIUS_CODE
    screen.lock(env.login("admin"))
    assert "authenticator code" in screen.hint_label.text()
    assert screen.code_edit.placeholderText() == "6-digit code"
