"""The film librarian's export wizard and the privacy officer's accounting, on screen."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import shiboken6
from pydicom.dataset import Dataset
from pytestqt.qtbot import QtBot

from app.errors import NotAuthenticated
from app.media.disclosures import (
    Delivery,
    ExportRequest,
    IdentityCheck,
    MediaKind,
    Purpose,
    RecipientKind,
)
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.ui.disclosures_dialog import DisclosuresDialog
from app.ui.export_wizard import ExportWizard
from app.vault import Vault
from tests.ui.conftest import PATIENT, USER_PASSWORD, shown_texts, unused_code


@pytest.fixture(scope="module")
def librarian(vault: Vault, admin_session: Session) -> tuple[Session, str]:
    enrolment = vault.admin.add_user(admin_session, "films", Role.LIBRARIAN, USER_PASSWORD)
    session = vault.accounts.login("films", USER_PASSWORD, totp.current_code(enrolment.totp_secret))[1]
    return session, enrolment.totp_secret


def _fill(wizard: ExportWizard, out: Path, code: str) -> None:
    wizard.recipient.setText("Jane Doe")
    wizard.out.setText(str(out))
    wizard.code.setText(code)


def test_the_wizard_exports_and_shows_the_passphrase_once(qtbot: QtBot, vault: Vault, open_window,
                                                          librarian: tuple[Session, str], session: Session,
                                                          ct_datasets: list[Dataset], tmp_path: Path) -> None:
    window = open_window(librarian[0])
    assert window.export_action.isVisible()
    window.browser.select_study(ct_datasets[0].StudyInstanceUID)
    wizard = window.export_media()
    assert wizard is not None and wizard.chosen_studies() == (ct_datasets[0].StudyInstanceUID,)
    code = totp.current_code(librarian[1], time.time() + totp.STEP)  # the login spent this step's

    # refused first: research needs de-identification by site policy; nothing is written
    wizard.purpose.setCurrentIndex(wizard.purpose.findData(Purpose.RESEARCH))
    _fill(wizard, tmp_path / "refused.zip", "000000")
    while wizard.currentPage() is not wizard.confirm_page:
        wizard.next()
    wizard.next()
    qtbot.waitUntil(lambda: wizard.error.isVisible(), timeout=10_000)
    assert "de-identification" in wizard.error.text() and not (tmp_path / "refused.zip").exists()

    wizard.purpose.setCurrentIndex(wizard.purpose.findData(Purpose.PATIENT_REQUEST))
    _fill(wizard, tmp_path / "jane", code)
    wizard.next()
    qtbot.waitUntil(lambda: wizard.result is not None, timeout=60_000)
    result = wizard.result
    assert wizard.currentPage() is wizard.passphrase_page
    assert wizard.passphrase.text() == result.passphrase and result.out == tmp_path / "jane.zip"
    assert subprocess.run(["7z", "t", f"-p{result.passphrase}", str(result.out)],
                          capture_output=True, timeout=60).returncode == 0
    wizard.close()

    radiologist = open_window(session)
    assert not radiologist.export_action.isVisible()


def test_the_accounting_lists_the_disclosure(qtbot: QtBot, vault: Vault, admin_session: Session,
                                             ct_datasets: list[Dataset], tmp_path: Path) -> None:
    films = vault.admin.add_user(admin_session, "films2", Role.LIBRARIAN, USER_PASSWORD)
    librarian = vault.accounts.login("films2", USER_PASSWORD, totp.current_code(films.totp_secret))[1]
    made = vault.disclosure.export(librarian, ExportRequest(
        (ct_datasets[0].StudyInstanceUID,), RecipientKind.PROVIDER, "Dr Who, St Elsewhere", Purpose.TREATMENT,
        IdentityCheck.PROVIDER_DIRECTORY, Delivery.PHONE, MediaKind.ISO, tmp_path / "cd.iso"),
        totp.current_code(films.totp_secret, time.time() + totp.STEP))
    enrolment = vault.admin.add_user(admin_session, "privacy2", Role.PRIVACY_OFFICER, USER_PASSWORD)
    officer = vault.accounts.login("privacy2", USER_PASSWORD, totp.current_code(enrolment.totp_secret))[1]
    dialog = DisclosuresDialog(vault, officer)
    qtbot.addWidget(dialog)
    dialog.patient_edit.setText(PATIENT.patient_id)
    dialog.show_patient()
    shown = set(shown_texts(dialog))
    assert made.serial in shown and "Dr Who, St Elsewhere" in shown
    assert dialog.pdf_button.isEnabled() and dialog.accounting.to_pdf().startswith(b"%PDF")


def test_outside_media_is_read_shown_and_imported(qtbot: QtBot, vault: Vault, admin_session: Session,
                                                  tmp_path: Path) -> None:
    from app.demo.studies import Patient
    from app.ui.outside_media_dialog import OutsideMediaDialog
    from tests.conftest import write_study

    write_study(tmp_path / "cdrom" / "DICOM", Patient("EXT-77", "Outside^Olga"), slices=3, size=16)
    (tmp_path / "cdrom" / "README.TXT").write_text("from elsewhere")
    films = vault.admin.add_user(admin_session, "films3", Role.LIBRARIAN, USER_PASSWORD)
    librarian = vault.accounts.login("films3", USER_PASSWORD, totp.current_code(films.totp_secret))[1]
    dialog = OutsideMediaDialog(vault, librarian)
    qtbot.addWidget(dialog)
    dialog.path_edit.setText(str(tmp_path / "cdrom"))
    dialog.read_media()
    assert {"Outside^Olga", "EXT-77", "3"} <= set(shown_texts(dialog)) and dialog.import_button.isEnabled()
    dialog.issuer_edit.setText("St Elsewhere")
    dialog.import_media()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=30_000)
    assert dialog.report.imported == 3 and not dialog.report.rejected
    assert "EXT-77" in [s.patient_id for s in vault.reading.studies(librarian)]


def test_wrong_codes_until_the_lock_end_the_session_and_lock_the_window(
        qtbot: QtBot, vault: Vault, admin_session: Session, open_window, ct_datasets: list[Dataset],
        tmp_path: Path, lockout_after_three: int) -> None:
    films = vault.admin.add_user(admin_session, "films4", Role.LIBRARIAN, USER_PASSWORD)
    librarian = vault.accounts.login("films4", USER_PASSWORD, totp.current_code(films.totp_secret))[1]
    window = open_window(librarian)
    window.browser.select_study(ct_datasets[0].StudyInstanceUID)
    wizard = window.export_media()
    assert wizard is not None
    refusals: list[str] = []
    for attempt in range(lockout_after_three):
        _fill(wizard, tmp_path / "jane.zip", unused_code(films.totp_secret))
        while wizard.currentPage() is not wizard.confirm_page:
            wizard.next()
        wizard.next()  # the export, in the background
        if attempt < lockout_after_three - 1:
            qtbot.waitUntil(lambda: wizard.error.isVisible(), timeout=30_000)
            refusals.append(wizard.error.text())
    qtbot.waitUntil(lambda: window.locked, timeout=30_000)

    assert refusals == ["The authenticator code is not correct."] * (lockout_after_three - 1)
    with pytest.raises(NotAuthenticated) as ended:
        vault.accounts.whoami(librarian)
    reason = str(ended.value)
    assert reason.startswith("This account is locked after repeated failed codes: the session has ended")
    assert window.lock_screen.error_label.text() == reason, "the window says why, in plain words"
    assert not (shiboken6.isValid(wizard) and wizard.isVisible()) and not (tmp_path / "jane.zip").exists()
