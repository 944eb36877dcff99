"""The export's last page (issue 23, item 8): the one-time passphrase shown whole at the wizard's
own size, copied to a clipboard that forgets it, and printed on a cover letter."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtPrintSupport import QPrintDialog, QPrinter
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

from app.media.disclosures import (
    Delivery,
    ExportRequest,
    ExportResult,
    IdentityCheck,
    MediaKind,
    Purpose,
    RecipientKind,
)
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.ui import export_pages
from app.ui.cover_letter import letter_document, print_letter
from app.ui.export_pages import PassphrasePage
from app.vault import Vault
from tests.ui.conftest import USER_PASSWORD, answer, image_array

LONGEST = "-".join(["wrestling"] * 6)  # six nine-letter words: the longest the generator makes


def _librarian(vault: Vault, admin_session: Session, name: str) -> tuple[Session, str]:
    enrolment = vault.admin.add_user(admin_session, name, Role.LIBRARIAN, USER_PASSWORD)
    session = vault.accounts.login(name, USER_PASSWORD, totp.current_code(enrolment.totp_secret))[1]
    return session, enrolment.totp_secret


def _next_code(secret: str) -> str:
    return totp.current_code(secret, time.time() + totp.STEP)  # the login spent this step's


@pytest.fixture(scope="module")
def exported(vault: Vault, admin_session: Session, ct_datasets: list[Dataset],
             tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """A real export, for the pages that only show its result."""
    session, secret = _librarian(vault, admin_session, "films-pp1")
    out = tmp_path_factory.mktemp("media") / "cd.zip"
    return vault.disclosure.export(session, ExportRequest(
        (ct_datasets[0].StudyInstanceUID,), RecipientKind.PATIENT, "Jane Doe", Purpose.PATIENT_REQUEST,
        IdentityCheck.PHOTO_ID, Delivery.COVER_LETTER, MediaKind.ZIP, out), _next_code(secret))


def _ink_rows(label: QLabel) -> np.ndarray:
    """Rows of the label where its (light, on the dark theme) text is drawn."""
    grey = image_array(label.grab().toImage())[..., :3].max(axis=2)
    return np.flatnonzero((grey > 160).any(axis=1))


def _assert_whole(qtbot: QtBot, label: QLabel, text: str) -> None:
    """The whole text is laid out inside the label, the label inside its window, and drawn."""
    qtbot.waitUntil(lambda: label.text() == text and label.isVisible())
    window = label.window()
    assert window.rect().contains(QRect(label.mapTo(window, QPoint(0, 0)), label.size()))
    box = label.contentsRect()
    metrics = QFontMetrics(label.font())
    needed = metrics.boundingRect(box, int(label.alignment()) | int(Qt.TextFlag.TextWordWrap), text)
    assert needed.width() <= box.width() and needed.height() <= box.height(), (needed, box)
    lines = round(needed.height() / metrics.lineSpacing())
    rows = _ink_rows(label)
    assert rows.size and rows[-1] > box.top() + (lines - 1) * metrics.lineSpacing(), \
        "the last line of the passphrase is drawn"


def test_the_wizard_shows_the_passphrase_whole_at_its_own_size(
        qtbot: QtBot, vault: Vault, admin_session: Session, open_window, ct_datasets: list[Dataset],
        tmp_path: Path) -> None:
    session, secret = _librarian(vault, admin_session, "films-pp2")
    window = open_window(session)
    window.browser.select_study(ct_datasets[0].StudyInstanceUID)
    wizard = window.export_media()
    assert wizard is not None
    qtbot.waitExposed(wizard)
    wizard.recipient.setText("Jane Doe")
    wizard.out.setText(str(tmp_path / "jane.zip"))
    wizard.code.setText(_next_code(secret))
    while wizard.currentPage() is not wizard.confirm_page:
        wizard.next()
    wizard.next()
    qtbot.waitUntil(lambda: wizard.result is not None or wizard.error.isVisible(), timeout=60_000)
    assert wizard.result is not None, wizard.error.text()
    assert wizard.currentPage() is wizard.passphrase_page

    _assert_whole(qtbot, wizard.passphrase, wizard.result.passphrase)
    wizard.passphrase_page.show_result(dataclasses.replace(wizard.result, passphrase=LONGEST))
    _assert_whole(qtbot, wizard.passphrase, LONGEST)
    assert wizard.width() <= 700, "whole without the wizard having grown past its usual size"
    wizard.close()


def test_copy_puts_the_passphrase_on_the_clipboard_and_takes_it_off(
        qtbot: QtBot, vault: Vault, exported: ExportResult, monkeypatch: pytest.MonkeyPatch) -> None:
    assert export_pages.CLIPBOARD_SECONDS == 30
    monkeypatch.setattr(export_pages, "CLIPBOARD_SECONDS", 0.3)
    page = PassphrasePage(vault)
    qtbot.addWidget(page)
    page.show_result(exported)
    clipboard = QApplication.clipboard()

    page.copy_button.click()
    assert clipboard.text() == exported.passphrase and "cleared in" in page.copied.text()
    qtbot.waitUntil(lambda: clipboard.text() == "", timeout=3000)

    page.copy_button.click()
    clipboard.setText("something the user copied since")
    qtbot.wait(600)
    assert clipboard.text() == "something the user copied since", "what replaced it is left alone"


def test_the_cover_letter_prints_with_the_passphrase_whole(qtbot: QtBot, vault: Vault, exported: ExportResult,
                                                           tmp_path: Path) -> None:
    page = PassphrasePage(vault)
    qtbot.addWidget(page)
    assert page.letter() is None
    page.show_result(exported)
    letter = page.letter()
    assert letter is not None and letter.emphasis == exported.passphrase
    document = letter_document(letter)
    assert exported.passphrase in document.toPlainText().splitlines()
    assert "Jane Doe" not in document.toPlainText(), "the envelope carries the name, not the letter"

    printer = QPrinter(QPrinter.PrinterMode.HighResolution)
    printer.setOutputFormat(QPrinter.OutputFormat.PdfFormat)
    printer.setOutputFileName(str(tmp_path / "letter.pdf"))
    print_letter(letter, printer)
    pdf = (tmp_path / "letter.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["letter.pdf"], "written only where chosen"


def test_print_asks_for_the_printer_first(qtbot: QtBot, vault: Vault, exported: ExportResult) -> None:
    page = PassphrasePage(vault)
    qtbot.addWidget(page)
    page.show_result(exported)
    asked: list[str] = []
    answer(QPrintDialog, lambda dialog: (asked.append(dialog.windowTitle()), dialog.reject()))
    page.print_button.click()
    assert asked == ["Print cover letter"]
