"""File › Import files/folder for the technologist, and outside media's progress and refusals:
against the real vault, checked on what the dialogs show (text and pixels)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient
from app.security.roles import Role
from app.security.sessions import Session
from app.ui import errands
from app.ui.import_dialog import ImportDialog
from app.ui.main_window import MainWindow
from app.ui.outside_media_dialog import OutsideMediaDialog
from app.vault import Vault
from tests.conftest import write_study
from tests.ui.conftest import Reader, logged_in, shown_texts

Grab = Callable[[QWidget], np.ndarray]


@pytest.fixture(scope="module")
def technologist(vault: Vault, admin_session: Session) -> Session:
    return logged_in(vault, admin_session, "importer1", Role.TECHNOLOGIST)


def imported(qtbot: QtBot, vault: Vault, session: Session, paths: list[Path]) -> ImportDialog:
    dialog = ImportDialog(vault, session, paths)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    assert not dialog.buttons.isEnabled(), "Close waits for the import's end"
    qtbot.waitUntil(lambda: dialog.progress.report is not None or dialog.progress.error.isVisible(),
                    timeout=30_000)
    return dialog


def test_a_folder_is_imported_with_a_count_and_each_quarantined_file_named_with_its_reason(
        qtbot: QtBot, vault: Vault, technologist: Session, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    write_study(folder / "ct", Patient("IMP-1", "Import^Ivy"), slices=4, size=16)
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"not really a data set")
    dialog = imported(qtbot, vault, technologist, [folder])

    progress = dialog.progress
    assert progress.report is not None and progress.report.imported == 4
    assert progress.status.text() == "Imported 4 image(s) into 1 study(ies); 0 already here; 1 quarantined."
    details = progress.details.toPlainText().splitlines()
    assert len(details) == 1 and details[0].startswith(f"Quarantined {folder / 'broken.dcm'}: ")
    assert len(details[0]) > len(f"Quarantined {folder / 'broken.dcm'}: ") + 5, "a reason is given"
    assert (progress.bar.value(), progress.bar.maximum(), progress.bar.text()) == (5, 5, "5 of 5 files")
    assert dialog.buttons.isEnabled()
    assert "IMP-1" in [s.patient_id for s in vault.reading.studies(technologist)]

    again = imported(qtbot, vault, technologist, [folder / "ct"])
    assert again.progress.status.text().startswith("Imported 0 image(s)") and "4 already here" in \
        again.progress.status.text()
    assert again.progress.details.toPlainText() == "Every file was imported or already here."


def test_the_bar_fills_with_the_count_as_the_vault_reports_progress(
        qtbot: QtBot, vault: Vault, technologist: Session, tmp_path: Path, grab_pixels: Grab) -> None:
    dialog = ImportDialog(vault, technologist, [tmp_path])
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    bar = dialog.progress
    bar.begin("scanner")
    bar.progress(3, 12)
    assert bar.status.text() == "Importing: 3 of 12 file(s) read…" and bar.bar.text() == "3 of 12 files"
    quarter = grab_pixels(bar.bar).astype(int)
    bar.progress(12, 12)
    full = grab_pixels(bar.bar).astype(int)
    rows, cols = quarter.shape[:2]
    right = (slice(rows // 3, 2 * rows // 3), slice(int(cols * 0.6), int(cols * 0.7)))
    assert np.abs(quarter[right] - full[right]).mean() > 20, "the chunk reaches the right only when full"


@pytest.fixture
def one_file_per_import(vault: Vault, admin_session: Session) -> Iterator[None]:
    before = vault.policy.intake_max_files
    vault.admin.set_policy(admin_session, "intake_max_files", "1")
    yield
    vault.admin.set_policy(admin_session, "intake_max_files", str(before))


def test_a_folder_the_vault_cannot_take_says_why_and_nothing_was_imported(
        qtbot: QtBot, vault: Vault, technologist: Session, tmp_path: Path, one_file_per_import: None) -> None:
    write_study(tmp_path, Patient("IMP-3", "Import^Al"), slices=2, size=16)
    dialog = imported(qtbot, vault, technologist, [tmp_path])
    assert dialog.progress.report is None and dialog.progress.status.text() == "Nothing was imported."
    assert dialog.progress.error.isVisible() and "Traceback" not in dialog.progress.error.text()
    assert dialog.buttons.isEnabled()
    assert "IMP-3" not in [s.patient_id for s in vault.reading.studies(technologist)]


def test_only_the_technologist_is_offered_import_files_and_folder(
        qtbot: QtBot, technologist: Session, reader: Reader, open_window: Callable[..., MainWindow],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_study(tmp_path / "one", Patient("IMP-2", "Import^Jo"), slices=2, size=16)
    window = open_window(technologist)
    actions = window.window_actions
    assert actions.import_files.isVisible() and actions.import_folder.isVisible()
    assert {"Import &files…", "Import f&older…"} <= set(shown_texts(window))
    chosen = {True: [tmp_path / "one"], False: []}  # the folder, or a cancelled file chooser
    monkeypatch.setattr(errands, "choose_import_paths", lambda parent, folder: chosen[folder])
    assert window.errands.import_files(folder=False) is None, "cancelling the chooser imports nothing"
    dialog = window.errands.import_files(folder=True)
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.progress.report is not None, timeout=30_000)
    assert dialog.progress.report.imported == 2
    dialog.close()
    qtbot.waitUntil(lambda: "IMP-2" in shown_texts(window.browser), timeout=10_000)

    monkeypatch.setattr(errands, "choose_import_paths", lambda parent, folder: [tmp_path / "one"])
    importing = window.errands.import_files(folder=False)
    assert importing is not None and importing.isVisible() and not importing.buttons.isEnabled()
    window.lock()
    assert not importing.isVisible(), "the lock closes the import, whose paths may name a patient"
    assert not [t for t in shown_texts(window) if "IMP-2" in t or "Import^Jo" in t], "nothing behind the lock"

    other = open_window(reader.session)
    assert not other.window_actions.import_files.isVisible()
    assert not other.window_actions.import_folder.isVisible()


def test_outside_media_says_which_field_is_missing_and_shows_progress_and_quarantine(
        qtbot: QtBot, vault: Vault, admin_session: Session, tmp_path: Path) -> None:
    write_study(tmp_path / "cd" / "DICOM", Patient("EXT-9", "Outside^Omar"), slices=3, size=16)
    (tmp_path / "cd" / "DICOM" / "IM9").write_bytes(b"\0" * 128 + b"DICM" + b"torn")
    librarian = logged_in(vault, admin_session, "films-import", Role.LIBRARIAN)
    dialog = OutsideMediaDialog(vault, librarian)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.path_edit.setText(str(tmp_path / "cd"))
    dialog.read_media()
    assert not dialog.progress.isVisible(), "no import yet, no progress"
    dialog.import_media()
    assert dialog.error.text().startswith("Enter who issued the outside Patient ID")
    assert "not both" not in dialog.error.text()
    dialog.local_choice.setChecked(True)
    dialog.import_media()
    assert dialog.error.text() == "Enter the Patient ID this patient has here."
    dialog.outside_choice.setChecked(True)
    dialog.issuer_edit.setText("St Elsewhere")
    dialog.import_media()
    assert dialog.progress.isVisible() and not dialog.error.isVisible()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=30_000)
    assert dialog.report.imported == 3 and len(dialog.report.rejected) == 1
    assert dialog.progress.status.text().endswith("1 quarantined.")
    assert "IM9: " in dialog.progress.details.toPlainText()
