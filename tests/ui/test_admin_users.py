"""The administrator's user screen against the real vault, and who gets to see it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.security.roles import Role
from app.security.sessions import Session
from app.ui.admin_users import AddUserDialog, AdminUsersDialog
from app.ui.enrolment_dialog import EnrolmentDialog
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import USER_PASSWORD, answer

_NEWCOMERS = itertools.count(1)


def row_texts(dialog: AdminUsersDialog, name: str) -> list[str]:
    row = dialog.model.row_of(name)
    assert row is not None, f"{name} is not listed"
    return [dialog.model.index(row, column).data() for column in range(dialog.model.columnCount())]


def test_admin_lists_adds_and_disables_users(qtbot: QtBot, vault: Vault, admin_session: Session,
                                             radiologist: object, monkeypatch: pytest.MonkeyPatch):
    dialog = AdminUsersDialog(vault, admin_session)
    qtbot.addWidget(dialog)
    dialog.show()
    assert row_texts(dialog, "admin") == ["admin", "admin", "Active", "Set up"]
    assert row_texts(dialog, "rad")[:3] == ["rad", "radiologist", "Active"]
    dialog.select("admin")
    assert not dialog.disable_button.isEnabled(), "an administrator cannot disable themself here"
    name = f"newcomer{next(_NEWCOMERS)}"
    handed_over: list[EnrolmentDialog] = []

    def add(add_dialog: AddUserDialog) -> None:
        add_dialog.name_edit.setText("rad")
        add_dialog.role_box.setCurrentIndex(add_dialog.role_box.findData(Role.TECHNOLOGIST.value))
        add_dialog.password_edit.setText(USER_PASSWORD)
        add_dialog.repeat_edit.setText(USER_PASSWORD)
        qtbot.mouseClick(add_dialog.ok_button, Qt.MouseButton.LeftButton)
        assert add_dialog.error_label.text() == "A user named 'rad' already exists."
        add_dialog.name_edit.setText(name)
        qtbot.mouseClick(add_dialog.ok_button, Qt.MouseButton.LeftButton)

    def hand_over(enrolment: EnrolmentDialog) -> None:
        handed_over.append(enrolment)
        assert not enrolment.qr_label.pixmap().isNull()
        assert enrolment.uri_edit.text().startswith(f"otpauth://totp/Custodian:{name}?secret=")
        assert len(enrolment.code_labels) == 10 and all(label.text() for label in enrolment.code_labels)
        assert enrolment.code_edit.isHidden(), "the administrator confirms nothing"
        qtbot.mouseClick(enrolment.ok_button, Qt.MouseButton.LeftButton)

    answer(AddUserDialog, add)
    answer(EnrolmentDialog, hand_over)
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)

    assert handed_over and handed_over[0].enrolment.user.name == name
    assert row_texts(dialog, name) == [name, "technologist", "Active", "Not yet"]
    assert dialog.selected() is not None and dialog.selected().name == name
    questions: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *rest:
                        questions.append(text) or QMessageBox.StandardButton.Yes)

    qtbot.mouseClick(dialog.disable_button, Qt.MouseButton.LeftButton)

    assert questions and questions[0].startswith(f"Disable {name}?")
    assert row_texts(dialog, name)[2] == "Disabled"
    assert next(u for u in vault.admin.list_users(admin_session) if u.name == name).disabled
    assert not dialog.disable_button.isEnabled()


def test_only_user_managers_get_the_users_screen(open_window: Callable[..., MainWindow],
                                                 admin_session: Session, session: Session):
    reader = open_window(session)
    assert not reader.user_menu.users_action.isVisible()
    assert reader.user_menu.title() == "&User rad"
    admin = open_window(admin_session)
    assert admin.user_menu.users_action.isVisible()
    assert admin.errors == [], "no study list for the admin role, and no error box either"
    assert admin.statusBar().currentMessage() == "The admin role has no study list."
