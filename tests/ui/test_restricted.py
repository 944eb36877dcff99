"""Minimum necessary in the study list, and break-glass for a restricted (VIP) patient."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import NotAuthenticated
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.ui.break_glass_dialog import BreakGlassDialog
from app.ui.main_window import MainWindow
from app.ui.study_list import HIDDEN, RESTRICTED
from app.vault import Vault
from tests.ui.conftest import USER_PASSWORD, Importer, Reader, answer, shown_texts, unused_code

VIP = Patient("P9", "Vip^Victor", birth_date="19710203", sex="M")


@pytest.fixture(scope="module")
def vip_study(vault: Vault, admin_session: Session, importer: Importer) -> list[Dataset]:
    """A CT of a patient the privacy officer restricted."""
    datasets = ct_study(VIP, slices=3, size=32)
    assert importer([(f"vip-{i}", to_bytes(ds)) for i, ds in enumerate(datasets)]).imported == 3
    officer = vault.admin.add_user(admin_session, "privacy", Role.PRIVACY_OFFICER, USER_PASSWORD)
    _, session = vault.accounts.login("privacy", USER_PASSWORD, totp.current_code(officer.totp_secret))
    vault.admin.restrict_patient(session, VIP.patient_id)
    return datasets


def study_row(window: MainWindow, study_uid: str) -> list[str]:
    model = window.browser.study_model
    row = model.row_of(study_uid)
    assert row is not None
    return [model.index(row, column).data() for column in range(model.columnCount())]


def test_a_restricted_patient_is_listed_without_demographics(
        open_window: Callable[..., MainWindow], reader: Reader, vip_study: list[Dataset]):
    window = open_window(reader.session)

    assert study_row(window, vip_study[0].StudyInstanceUID)[:3] == [RESTRICTED, HIDDEN, HIDDEN]
    texts = shown_texts(window)
    assert not [text for text in texts for part in ("Vip", "Victor", "P9", "1971") if part in text]


def test_break_glass_with_reason_and_code_opens_the_study(
        qtbot: QtBot, open_window: Callable[..., MainWindow], reader: Reader, vip_study: list[Dataset]):
    window = open_window(reader.session)
    refusals: list[str] = []

    def break_glass(dialog: BreakGlassDialog) -> None:
        assert "privacy officer is alerted" in dialog.notice_label.text()
        assert "restricted" in dialog.intro_label.text(), "the vault's refusal says why"
        qtbot.keyClicks(dialog.reason_edit, "urgent")
        qtbot.keyClicks(dialog.code_edit, reader.next_code())
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
        refusals.append(dialog.error_label.text())
        assert dialog.code_edit.text() == "", "asks for the code again"
        qtbot.keyClicks(dialog.reason_edit, ": trauma call, unconscious patient")
        qtbot.keyClicks(dialog.code_edit, reader.next_code())
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)

    answer(BreakGlassDialog, break_glass)
    assert window.open_study(vip_study[0].StudyInstanceUID)

    assert refusals == ["State the emergency reason in a few words (at least 10 characters)."]
    viewport = window.grid.active
    assert viewport.series_uid == vip_study[0].SeriesInstanceUID and viewport.view.series is not None
    assert study_row(window, vip_study[0].StudyInstanceUID)[:3] == ["Vip, Victor", "P9", "1971-02-03"]
    assert window.errors == []


def test_declining_break_glass_opens_nothing(open_window: Callable[..., MainWindow], reader: Reader,
                                            vip_study: list[Dataset]):
    window = open_window(reader.session)
    answer(BreakGlassDialog, lambda dialog: dialog.reject())

    assert not window.open_study(vip_study[0].StudyInstanceUID)

    assert all(viewport.view.series is None for viewport in window.grid.viewports)
    assert study_row(window, vip_study[0].StudyInstanceUID)[0] == RESTRICTED


def test_wrong_break_glass_codes_until_the_lock_end_the_session_and_lock_the_window(
        qtbot: QtBot, vault: Vault, open_window: Callable[..., MainWindow], reader: Reader,
        vip_study: list[Dataset], lockout_after_three: int):
    window = open_window(reader.session)
    refusals: list[str] = []

    def guess(dialog: BreakGlassDialog) -> None:
        qtbot.keyClicks(dialog.reason_edit, "trauma call, unconscious patient")
        for _ in range(lockout_after_three):
            qtbot.keyClicks(dialog.code_edit, unused_code(reader.secret))
            qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
            if dialog.isVisible():
                refusals.append(dialog.error_label.text())

    answer(BreakGlassDialog, guess, timeout=30)
    assert not window.open_study(vip_study[0].StudyInstanceUID)

    assert refusals == ["The authenticator code is not correct."] * (lockout_after_three - 1)
    with pytest.raises(NotAuthenticated) as ended:
        vault.accounts.whoami(reader.session)
    reason = str(ended.value)
    assert reason.startswith("This account is locked after repeated failed codes: the session has ended")
    assert window.locked and window.lock_screen.error_label.text() == reason, "the plain reason, at once"
    assert all(viewport.view.series is None for viewport in window.grid.viewports)
    assert not [text for text in shown_texts(window) for part in ("Vip", "Victor", "P9") if part in text]
    screen = window.lock_screen
    screen.password_edit.setText(reader.password)
    qtbot.keyClicks(screen.code_edit, reader.next_code())
    qtbot.mouseClick(screen.unlock_button, Qt.MouseButton.LeftButton)
    assert screen.title_label.text() == "Session ended" and screen.hint_label.text().startswith(reason)
    assert window.session is None
