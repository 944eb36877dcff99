"""The reading session kept through Switch user, Quit and images that cannot be shown, against the
real vault, with the real dialogs answered as a reader would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ParametricMapStorage, generate_uid
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.ui.login_dialog import LoginDialog
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.imaging.frames import encoded
from tests.ui.conftest import Importer, Reader, answer, white_pixels

Grab = Callable[[QWidget], np.ndarray]
OpenWindow = Callable[..., MainWindow]


def reading(qtbot: QtBot, open_window: OpenWindow, reader: Reader, study_uid: str) -> MainWindow:
    """The reader's window, active, with ``study_uid`` open."""
    window = open_window(reader.session, idle_limit=60)
    with qtbot.waitActive(window):
        window.activateWindow()
    assert window.open_study(study_uid)
    return window


@pytest.fixture
def modal_boxes() -> Iterator[list[str]]:
    """The text of every modal box that opens meanwhile (each is closed at once)."""
    seen: list[str] = []
    timer = QTimer()

    def poll() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            seen.append(box.text())
            box.reject()

    timer.timeout.connect(poll)
    timer.start(5)
    yield seen
    timer.stop()


def test_switch_user_cancelled_returns_to_the_same_reading(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset],
        grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets[0].StudyInstanceUID)
    view = window.grid.active.view
    view.set_index(6)
    before = grab_pixels(view)
    hidden: list[bool] = []

    def cancel(dialog: LoginDialog) -> None:
        hidden.append(window.locked and white_pixels(grab_pixels(window)) == 0)
        dialog.reject()

    answer(LoginDialog, cancel)
    window.user_menu.switch_action.trigger()

    assert hidden == [True], "nothing of the patient shows behind the login"
    assert not window.locked and window.session is reader.session
    assert vault.accounts.whoami(reader.session).user.name == reader.name
    assert window.windowTitle() == f"Custodian — {reader.name} (radiologist)"
    view = window.grid.active.view
    assert window.grid.active.series_uid == ct_datasets[0].SeriesInstanceUID and view.index == 6
    np.testing.assert_array_equal(grab_pixels(view), before)
    assert window.menuBar().isVisible() and window.window_actions.mpr.isEnabled()


def test_switch_user_left_open_past_the_idle_limit_stays_locked(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset],
        grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets[0].StudyInstanceUID)

    def walk_away(dialog: LoginDialog) -> None:
        window.idle_limit = 0.05
        time.sleep(0.1)  # the reader went; whoever cancels now is not known to be them
        dialog.reject()

    answer(LoginDialog, walk_away)
    window.user_menu.switch_action.trigger()

    assert window.locked and window.session is reader.session
    assert window.lock_screen.user_label.text() == reader.name
    assert white_pixels(grab_pixels(window)) == 0


def test_quit_asks_while_series_are_open_and_cancel_keeps_reading(
        qtbot: QtBot, vault: Vault, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset],
        grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets[0].StudyInstanceUID)
    asked: list[str] = []

    def cancel(box: QMessageBox) -> None:
        asked.append(box.text())
        box.button(QMessageBox.StandardButton.Cancel).click()

    answer(QMessageBox, cancel)
    qtbot.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)

    assert asked == ["1 series is open. Quit Custodian and end this reading session?"]
    assert window.isVisible() and white_pixels(grab_pixels(window.grid)) > 50
    assert vault.accounts.whoami(reader.session).user.name == reader.name

    with qtbot.waitActive(window):
        window.activateWindow()
    answer(QMessageBox, lambda box: box.button(QMessageBox.StandardButton.Yes).click())
    qtbot.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert not window.isVisible()


def test_quit_without_open_series_asks_nothing(qtbot: QtBot, open_window: OpenWindow, reader: Reader,
                                               modal_boxes: list[str]):
    window = open_window(reader.session, idle_limit=60)
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert not window.isVisible() and modal_boxes == []


def test_quit_asks_for_work_the_lock_put_away(qtbot: QtBot, open_window: OpenWindow, reader: Reader,
                                              ct_datasets: list[Dataset]):
    window = reading(qtbot, open_window, reader, ct_datasets[0].StudyInstanceUID)
    window.lock()
    asked: list[str] = []

    def cancel(box: QMessageBox) -> None:
        asked.append(box.text())
        box.reject()

    answer(QMessageBox, cancel)
    window.window_actions.quit.trigger()
    assert asked and window.isVisible() and window.locked


def parametric_map(patient: Dataset) -> Dataset:
    """A float Parametric Map (Float Pixel Data, no integer pixels) of ``patient``'s study."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    values = ds.pixel_array.astype(np.float32) / 700.0
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
                    "RescaleIntercept", "WindowCenter", "WindowWidth", "SmallestImagePixelValue",
                    "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        setattr(ds, keyword, patient.data_element(keyword).value)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ParametricMapStorage
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.SeriesNumber, ds.SeriesDescription = 90, "ADC map"
    ds.BitsAllocated, ds.NumberOfFrames = 32, 1
    ds.FloatPixelData = values.tobytes()
    return ds


def test_a_float_parametric_map_opens_as_one_image(
        qtbot: QtBot, open_window: OpenWindow, reader: Reader, importer: Importer, modal_boxes: list[str],
        grab_pixels: Grab):
    (ct,) = ct_study(Patient("P7", "Map^Parametric"), slices=1, size=64)
    pm = parametric_map(ct)
    report = importer([("ct", to_bytes(ct)), ("adc", encoded(pm))])
    assert report.imported == 2 and not report.rejected
    window = reading(qtbot, open_window, reader, ct.StudyInstanceUID)

    assert window.load_series(pm.SeriesInstanceUID)

    view = window.grid.active.view
    assert view.problem == "" and view.series is not None and len(view.series) == 1
    assert window.statusBar().currentMessage() == "Series 90 · MR · ADC map · 1 image"
    rect = view.image_rect()
    shown = grab_pixels(view)[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert len(np.unique(shown)) > 50, "the map's values, windowed"
    assert modal_boxes == []


def test_a_multi_frame_image_is_counted_as_one_image_of_its_frames(
        qtbot: QtBot, open_window: OpenWindow, reader: Reader, importer: Importer, modal_boxes: list[str]):
    dose = pydicom.dcmread(get_testdata_file("rtdose.dcm"))  # one instance, 15 frames
    dose.PatientName, dose.PatientID = "Dose^Multi", "P8"
    dose.StudyInstanceUID, dose.SeriesInstanceUID = generate_uid(), generate_uid()
    dose.SOPInstanceUID = dose.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert importer([("dose", encoded(dose))]).imported == 1
    window = reading(qtbot, open_window, reader, dose.StudyInstanceUID)

    assert window.browser.series_model.index(0, 3).data() == "1", "the series list counts images"
    assert window.statusBar().currentMessage().endswith("1 image · 15 frames")
    view = window.grid.active.view
    view.set_index(4)
    assert view.overlay_text()[0].splitlines()[-1] == "Fr 5/15"
    assert modal_boxes == []


def test_smoothing_is_switched_for_every_viewport_from_the_view_menu(
        qtbot: QtBot, open_window: OpenWindow, reader: Reader, ct_datasets: list[Dataset], grab_pixels: Grab):
    window = reading(qtbot, open_window, reader, ct_datasets[0].StudyInstanceUID)
    view = window.grid.active.view
    view.set_annotations(False)
    smooth = grab_pixels(view)
    assert all(v.view.smooth for v in window.grid.viewports)

    control_shift = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(window, Qt.Key.Key_I, control_shift)

    assert not window.window_actions.smooth.isChecked()
    assert not any(v.view.smooth for v in window.grid.viewports)
    blocky = grab_pixels(view)
    assert len(np.unique(blocky[..., 0])) < len(np.unique(smooth[..., 0])), \
        "without smoothing only the rendered values show"


def test_the_help_names_the_new_shortcuts(open_window: OpenWindow, reader: Reader):
    window = open_window(reader.session, idle_limit=60)
    help_text = window.help_text()
    assert "Ctrl+Shift+I: Smooth scaled images" in help_text and "Ctrl+Q: Quit" in help_text
