"""The main window and run_gui against the real vault, checked on the painted pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox, QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import UsageError
from app.security.sessions import Session
from app.ui import run_gui
from app.ui.login_dialog import LoginDialog
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import Importer

PATIENT_NAME_PARTS = ("Doe", "Jane")


@pytest.fixture
def window(qtbot: QtBot, vault: Vault, session: Session) -> MainWindow:
    window = MainWindow(vault, session)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.refresh()
    return window


def table_texts(model: object, row: int) -> list[str]:
    return [model.index(row, column).data() for column in range(model.columnCount())]  # type: ignore[attr-defined]


def test_lists_the_study_and_its_series_and_shows_an_image(window: MainWindow, ct_datasets: list[Dataset],
                                                           grab_pixels: Callable[[QWidget], np.ndarray]):
    study_uid = ct_datasets[0].StudyInstanceUID
    studies = window.browser.study_model
    row = studies.row_of(study_uid)
    assert row is not None
    assert table_texts(studies, row) == ["Doe, Jane", "P1", "1960-01-01", "2026-03-15", "CT", "CT CHEST",
                                      "10"]

    assert window.open_study(study_uid)

    assert table_texts(window.browser.series_model, 0) == ["1", "CT", "Axial 2.5 mm", "10"]
    assert window.browser.current_study_uid() == study_uid
    active = window.grid.active
    assert active.series_uid == ct_datasets[0].SeriesInstanceUID
    view = active.view
    assert view.series is not None and len(view.series) == 10
    rect = view.image_rect()
    shown = grab_pixels(view)[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert len(np.unique(shown)) >= 3, "air, water and bone should all be visible"
    assert window.errors == []


def test_the_window_title_names_the_user_never_the_patient(window: MainWindow, ct_datasets: list[Dataset]):
    window.open_study(ct_datasets[0].StudyInstanceUID)
    title = window.windowTitle()
    assert title == "Custodian — rad (radiologist)"
    assert not any(part.casefold() in title.casefold() for part in PATIENT_NAME_PARTS)


def test_selecting_a_series_loads_it_into_the_active_viewport(qtbot: QtBot, window: MainWindow,
                                                              ct_datasets: list[Dataset]):
    window.set_layout("1x2")
    window.browser.select_study(ct_datasets[0].StudyInstanceUID)
    right = window.grid.visible_viewports()[1]
    right.view.setFocus()  # clicking a viewport makes it the active one
    qtbot.waitUntil(lambda: window.grid.active is right)

    window.browser.select_series(ct_datasets[0].SeriesInstanceUID)

    assert right.series_uid == ct_datasets[0].SeriesInstanceUID and right.view.series is not None
    assert window.grid.visible_viewports()[0].view.series is None


def test_layout_shortcuts(qtbot: QtBot, window: MainWindow, ct_datasets: list[Dataset]):
    with qtbot.waitActive(window):
        window.activateWindow()
    for keys, layout, count in (("Ctrl+4", "2x2", 4), ("Ctrl+2", "1x2", 2), ("Ctrl+1", "1x1", 1)):
        qtbot.keySequence(window, keys)
        assert window.grid.layout_name == layout
        assert len(window.grid.visible_viewports()) == count
        assert window.layout_actions[layout].isChecked()


def test_open_study_in_2x2_hangs_the_series_and_clears_the_rest(vault: Vault, session: Session,
                                                                qtbot: QtBot, ct_datasets: list[Dataset]):
    window = MainWindow(vault, session, layout="2x2")
    qtbot.addWidget(window)
    window.refresh()
    first, *others = window.grid.visible_viewports()
    window.grid.set_active(others[0])

    assert window.open_study(ct_datasets[0].StudyInstanceUID)

    assert window.grid.active is first and first.view.series is not None
    assert all(viewport.view.series is None for viewport in others), "the study has one series"


def test_a_series_that_cannot_be_read_says_why_in_its_viewport(window: MainWindow,
                                                               monkeypatch: pytest.MonkeyPatch):
    boxes: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: boxes.append(text))

    assert not window.load_series("1.2.826.0.1.3680043.8.498.1")

    message = "This series has no images in the cache."
    assert boxes == [], "no box in the reader's way"
    assert window.grid.active.view.problem == message and window.grid.active.series_uid is None
    assert window.statusBar().currentMessage() == message


def test_run_gui_screenshot_writes_the_window_with_an_image(tmp_path: Path, vault: Vault, session: Session,
                                                           ct_datasets: list[Dataset],
                                                           read_png: Callable[[Path], np.ndarray]):
    path = tmp_path / "viewer.png"

    assert run_gui(vault, session, open_study=ct_datasets[0].StudyInstanceUID, screenshot=path) == 0

    pixels = read_png(path)
    assert pixels.shape == (800, 1280, 3)
    viewport = pixels[100:700, 700:1200]  # right of the study list, inside the single viewport
    assert viewport.any(), "the image area is black"
    assert len(np.unique(viewport.reshape(-1, 3), axis=0)) >= 3
    start, stop = [r.type for r in vault._gate._audit.records()
                   if r.type in ("application-start", "application-stop")][:2][::-1]
    assert (start, stop) == ("application-start", "application-stop")


def test_run_gui_refuses_unknown_layouts(vault: Vault, session: Session):
    with pytest.raises(UsageError, match="1x1, 1x2, 2x2, 2x3, 3x3"):
        run_gui(vault, session, layout="4x4")


def test_run_gui_returns_1_when_the_login_is_cancelled(vault: Vault, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(LoginDialog, "exec", lambda self: QDialog.DialogCode.Rejected)
    assert run_gui(vault, None) == 1


def test_opening_a_study_puts_the_keyboard_in_its_viewport(qtbot: QtBot, window: MainWindow,
                                                           ct_datasets: list[Dataset]):
    with qtbot.waitActive(window):
        window.activateWindow()
    window.open_study(ct_datasets[0].StudyInstanceUID)
    view = window.grid.active.view
    assert QApplication.focusWidget() is view
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_End)
    assert view.index == 9 and view.overlay_text()[0].endswith("Im 10/10")


def test_screenshot_reports_a_study_that_is_not_there(tmp_path: Path, vault: Vault, session: Session,
                                                      capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "viewer.png"
    assert run_gui(vault, session, open_study="1.2.826.0.1.3680043.8.498.2", screenshot=path) == 1
    assert "This study is not in the study list." in capsys.readouterr().err
    assert path.exists(), "the window is still captured"


def test_another_patients_images_never_stay_beside_a_new_one(qtbot: QtBot, vault: Vault, session: Session,
                                                             ct_datasets: list[Dataset], importer: Importer):
    other = ct_study(Patient("P3", "Poe^Edgar"), slices=2, size=32)
    importer([(f"p3-{i}", to_bytes(ds)) for i, ds in enumerate(other)])
    window = MainWindow(vault, session, layout="1x2")
    qtbot.addWidget(window)
    window.refresh()
    left, right = window.grid.visible_viewports()
    window.open_study(ct_datasets[0].StudyInstanceUID)
    assert left.series_uid == ct_datasets[0].SeriesInstanceUID

    window.browser.select_study(other[0].StudyInstanceUID)
    window.grid.set_active(right)
    window.browser.select_series(other[0].SeriesInstanceUID)

    assert right.series_uid == other[0].SeriesInstanceUID and right.view.series is not None
    assert left.series_uid is None and left.view.series is None
    assert "showing another patient" in window.statusBar().currentMessage()


def test_open_study_hangs_the_relevant_prior_beside_it(qtbot: QtBot, vault: Vault, session: Session,
                                                      grab_pixels: Callable[[QWidget], np.ndarray],
                                                      importer: Importer):
    patient = Patient("P7", "Prior^Paula")
    current = ct_study(patient, slices=3, size=32, date="20260315")
    prior = ct_study(patient, slices=3, size=32, date="20250302", description="CT CHEST PRIOR")
    older = ct_study(patient, slices=3, size=32, date="20230101", description="CT CHEST OLD")
    items = [(f"p7-{i}", to_bytes(ds)) for i, ds in enumerate(current + prior + older)]
    assert importer(items).imported == 9
    window = MainWindow(vault, session, layout="1x2")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.refresh()

    assert window.open_study(current[0].StudyInstanceUID)

    left, right = window.grid.visible_viewports()
    assert left.series_uid == current[0].SeriesInstanceUID
    assert right.series_uid == prior[0].SeriesInstanceUID
    rect = right.view.image_rect()
    shown = grab_pixels(right.view)[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert len(np.unique(shown)) >= 3
    assert window.grid.active is left and window.errors == []
