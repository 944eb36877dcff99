"""The reading tools, driven with the mouse and keys, checked on pixels and on the vault.

The CT phantom is 64 × 64 pixels of 350/64 mm: a water cylinder (0 HU) of radius 25.6 pixels
with a bone rod (1000 HU) of radius 3.84 pixels near its left edge.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import NotPermitted
from app.imaging.display import CT_PRESETS, Window
from app.imaging.measure import Kind
from app.imaging.series import SeriesImages
from app.security.sessions import Session
from app.ui.image_view import ImageView
from app.ui.main_window import MainWindow
from app.ui.view_controls import Tool
from app.vault import Vault
from tests.ui.conftest import Importer, Reader
from tests.ui.test_image_view import reference, stack
from tests.ui.test_lock import unlock

Grab = Callable[[QWidget], np.ndarray]
SPACING = 350.0 / 64
SIDE = 256  # a square view: the 64-pixel image fits at 4 screen pixels per image pixel


@pytest.fixture
def view(qtbot: QtBot) -> ImageView:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(SIDE, SIDE)
    view.set_annotations(False)
    view.set_smooth(False)  # one block of the exact rendered value per image pixel
    view.show()
    qtbot.waitExposed(view)
    return view


@pytest.fixture
def ct_series(vault: Vault, session: Session, ct_datasets: list[Dataset]) -> SeriesImages:
    return vault.reading.open_series(session, ct_datasets[0].SeriesInstanceUID)


def at(view: ImageView, x: float, y: float) -> QPoint:
    return view.to_widget((x, y)).toPoint()


def drag(qtbot: QtBot, view: ImageView, start: QPoint, end: QPoint,
         button: Qt.MouseButton = Qt.MouseButton.LeftButton) -> None:
    qtbot.mousePress(view, button, pos=start)
    qtbot.mouseMove(view, end)
    qtbot.mouseRelease(view, button, pos=end)


def shown(view: ImageView, grab: Grab) -> np.ndarray:
    """The image pixels at 4× (the fitted zoom), one value per image pixel."""
    return grab(view)[:, :, 0][::4, ::4].astype(int)


def test_distance_angle_ellipse_and_text(qtbot: QtBot, view: ImageView, ct_series: SeriesImages,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    view.set_series(ct_series)
    made = []
    view.measured.connect(made.append)

    qtbot.keyClick(view, Qt.Key.Key_D)
    assert view.tool is Tool.DISTANCE
    drag(qtbot, view, at(view, 10, 32), at(view, 50, 32))
    assert view.measurement_labels() == [f"{40 * SPACING:.1f} mm"]  # 218.8 mm

    qtbot.keyClick(view, Qt.Key.Key_A)
    for point in ((42, 20), (32, 20), (32, 30)):  # arm, vertex, arm: a right angle
        qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, *point))
    assert view.measurement_labels()[-1] == "90.0°"

    qtbot.keyClick(view, Qt.Key.Key_E)
    drag(qtbot, view, at(view, 36, 24), at(view, 48, 40))  # inside the water
    area = np.pi * 6 * SPACING * 8 * SPACING
    assert view.measurement_labels()[-1] == ("Mean 0.0 HU  SD 0.0 HU\nMin 0.0 HU  Max 0.0 HU\n"
                                             f"Area {area:.1f} mm²")
    drag(qtbot, view, at(view, 24, 30), at(view, 28, 34))  # on the bone rod
    assert view.measurement_labels()[-1].startswith("Mean 1000.0 HU  SD 0.0 HU")

    monkeypatch.setattr(view, "ask_text", lambda current: "rod")
    qtbot.keyClick(view, Qt.Key.Key_T)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 20, 10))
    assert view.measurement_labels()[-1] == "rod"
    assert [m.kind for m in made] == [Kind.DISTANCE, Kind.ANGLE, Kind.ELLIPSE, Kind.ELLIPSE, Kind.TEXT]
    assert all(m.sop_uid == ct_series.info(0).sop_uid and m.frame == 0 for m in made)

    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert view.measurement_labels()[-1].startswith("Mean 1000.0")
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.measurement_labels() == []  # measurements belong to their image

    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert view.tool is Tool.WINDOW


def test_measurements_are_drawn_on_the_image(qtbot: QtBot, view: ImageView, ct_series: SeriesImages,
                                             grab_pixels: Grab) -> None:
    view.set_series(ct_series)
    def green(pixels: np.ndarray) -> np.ndarray:
        p = pixels.astype(int)
        return (p[..., 1] > 150) & (p[..., 1] > p[..., 0] + 40) & (p[..., 1] > p[..., 2] + 40)

    assert not green(grab_pixels(view)).any(), "grey before measuring"
    qtbot.keyClick(view, Qt.Key.Key_D)
    drag(qtbot, view, at(view, 10, 60), at(view, 50, 60))
    qtbot.keyClick(view, Qt.Key.Key_Escape)  # the new one is no longer selected (drawn in its own colour)
    row, start, end = at(view, 30, 60).y(), at(view, 12, 60).x(), at(view, 48, 60).x()
    along = green(grab_pixels(view))[row - 1: row + 2, start:end].any(axis=0)
    assert along.mean() > 0.9, "the line is drawn along the measured distance"


def test_zoom_pan_rotate_flip_invert(qtbot: QtBot, view: ImageView, ct_series: SeriesImages,
                                     ct_datasets: list[Dataset], grab_pixels: Grab) -> None:
    view.set_series(ct_series)
    expected = np.rint(reference(stack(ct_series, ct_datasets)[0], 40, 400)).astype(int)
    assert np.abs(shown(view, grab_pixels) - expected).max() <= 1

    qtbot.keyClick(view, Qt.Key.Key_BracketRight)  # a quarter turn clockwise
    assert np.abs(shown(view, grab_pixels) - np.rot90(expected, -1)).max() <= 1
    assert view.edge_text()["top"] == "R"
    qtbot.keyClick(view, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert np.abs(shown(view, grab_pixels) - expected[:, ::-1]).max() <= 1
    assert view.edge_text() == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    qtbot.keyClick(view, Qt.Key.Key_H)
    qtbot.keyClick(view, Qt.Key.Key_V)
    assert np.abs(shown(view, grab_pixels) - expected[::-1]).max() <= 1
    qtbot.keyClick(view, Qt.Key.Key_V)

    qtbot.keyClick(view, Qt.Key.Key_I)
    assert np.abs(shown(view, grab_pixels) - (255 - expected)).max() <= 1
    qtbot.keyClick(view, Qt.Key.Key_I)

    qtbot.keyClick(view, Qt.Key.Key_1)  # one image pixel per screen pixel, centred
    assert view.zoom == 1.0 and view.image_rect().size().toTuple() == (64, 64)
    assert view.image_rect().topLeft().toTuple() == (96, 96)
    qtbot.keyClick(view, Qt.Key.Key_F)
    assert view.image_rect().size().toTuple() == (SIDE, SIDE)

    drag(qtbot, view, QPoint(128, 128), QPoint(128, 28), Qt.MouseButton.RightButton)  # up: zoom in
    assert view.zoom == pytest.approx(4 * 2 ** 0.5, rel=0.05)
    qtbot.keyClick(view, Qt.Key.Key_F)
    drag(qtbot, view, QPoint(100, 100), QPoint(140, 120), Qt.MouseButton.MiddleButton)  # pan
    assert view.image_rect().topLeft().toTuple() == (40, 20)
    pixels = shown(view, grab_pixels)
    assert np.abs(pixels[5:, 10:] - expected[:-5, :-10]).max() <= 1
    qtbot.keyClick(view, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # reset the view
    assert view.image_rect().topLeft().toTuple() == (0, 0)


def test_presets_stored_windows_and_cine(qtbot: QtBot, view: ImageView, ct_series: SeriesImages) -> None:
    view.set_series(ct_series)
    qtbot.keyClick(view, Qt.Key.Key_F5)  # the fourth preset
    name = list(CT_PRESETS)[3]
    assert name == "Lung" and view.window == Window(-600, 1500)
    qtbot.keyClick(view, Qt.Key.Key_R)
    assert view.window == Window(40, 400)

    qtbot.keyClick(view, Qt.Key.Key_C)
    assert view.cine_running
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.cine_fps == pytest.approx(12.5)
    qtbot.waitUntil(lambda: view.index >= 3, timeout=3000)
    assert "Cine 12 fps" in view.overlay_text()[0] or "Cine 13 fps" in view.overlay_text()[0]
    qtbot.keyClick(view, Qt.Key.Key_C)
    stopped = view.index
    qtbot.wait(300)
    assert not view.cine_running and view.index == stopped


def test_corner_letters_and_scale_bar_are_drawn(qtbot: QtBot, view: ImageView, ct_series: SeriesImages,
                                                grab_pixels: Grab) -> None:
    view.set_series(ct_series)
    plain = grab_pixels(view).astype(int)
    view.set_annotations(True)
    marked = grab_pixels(view).astype(int)
    changed = np.abs(marked - plain).sum(axis=2) > 60
    middle = slice(SIDE // 2 - 20, SIDE // 2 + 20)
    assert changed[middle, :20].any() and changed[:20, middle].any(), "orientation letters"
    assert changed[20:-20, -12:-6].any(), "the scale bar along the right edge"
    assert view.edge_text() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def _measure_distance(qtbot: QtBot, window: MainWindow) -> str:
    """Draw a 40-pixel distance; its label, from the points the mouse could reach at this zoom."""
    view = window.grid.active.view
    qtbot.keyClick(view, Qt.Key.Key_D)
    drag(qtbot, view, at(view, 10, 32), at(view, 50, 32))
    (a, b) = view.measurements[-1].points
    assert abs(a[0] - 10) < 0.5 and abs(b[0] - 50) < 0.5 and abs(a[1] - 32) < 0.5
    return f"{np.hypot(b[0] - a[0], b[1] - a[1]) * SPACING:.1f} mm"


def test_measurements_are_back_after_the_lock(qtbot: QtBot, ct_datasets: list[Dataset], reader: Reader,
                                             open_window: Callable[..., MainWindow]) -> None:
    window = open_window(reader.session)
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    text = _measure_distance(qtbot, window)
    view = window.grid.active.view
    window.lock()
    assert view.series is None and view.measurement_labels() == []
    unlock(qtbot, window, reader.password, reader.next_code())
    assert not window.locked and window.grid.active.view.measurement_labels() == [text]


def test_measurements_are_saved_for_their_reader_only(qtbot: QtBot, vault: Vault, ct_datasets: list[Dataset],
                                                     open_window: Callable[..., MainWindow],
                                                     reader: Reader, new_user: Callable[[], object]) -> None:
    series_uid = ct_datasets[0].SeriesInstanceUID
    window = open_window(reader.session)
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    text = _measure_distance(qtbot, window)
    (saved,) = vault.reading.measurements(reader.session, series_uid)
    assert saved.id is not None and saved.kind is Kind.DISTANCE
    assert window.grid.active.view.measurements == [saved]
    window.close()

    again = open_window(reader.session)  # the next time the reader opens the study
    assert again.open_study(ct_datasets[0].StudyInstanceUID)
    view = again.grid.active.view
    assert view.measurement_labels() == [text]
    qtbot.keyClick(view, Qt.Key.Key_Delete)  # nothing selected: nothing deleted
    assert vault.reading.measurements(reader.session, series_uid) == [saved]
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 30, 32))  # on the line: selects it
    assert view.selected == saved
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert vault.reading.measurements(reader.session, series_uid) == []


def test_a_technologist_measures_without_saving(qtbot: QtBot, vault: Vault, ct_datasets: list[Dataset],
                                               open_window: Callable[..., MainWindow],
                                               admin_session: Session) -> None:
    from app.security import totp
    from app.security.roles import Role
    from tests.ui.conftest import USER_PASSWORD

    enrolment = vault.admin.add_user(admin_session, f"qc{generate_uid()[-6:]}", Role.TECHNOLOGIST,
                                     USER_PASSWORD)
    _, session = vault.accounts.login(enrolment.user.name, USER_PASSWORD,
                                      totp.current_code(enrolment.totp_secret))
    window = open_window(session)
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    text = _measure_distance(qtbot, window)
    assert window.grid.active.view.measurement_labels() == [text]
    assert window.errors == []
    with pytest.raises(NotPermitted, match="may not save measurements"):
        vault.reading.measurements(session, ct_datasets[0].SeriesInstanceUID)


def test_corner_text_names_the_patient_and_study(ct_datasets: list[Dataset], reader: Reader,
                                                open_window: Callable[..., MainWindow]) -> None:
    window = open_window(reader.session)
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    view = window.grid.active.view
    assert view._corners == (["Doe Jane", "ID P1", "1960-01-01 O"],
                             ["2026-03-15", "CT CHEST", f"Acc {ct_datasets[0].AccessionNumber}",
                              "Se 1 Axial 2.5 mm"])
    window.lock()
    assert view._corners == ([], [])


def test_scrolling_is_synchronised_with_the_prior(qtbot: QtBot, vault: Vault, importer: Importer,
                                                 open_window: Callable[..., MainWindow],
                                                 reader: Reader) -> None:
    patient = Patient("SYNC1", "Sync^Sam")
    current = ct_study(patient, slices=20, size=32, date="20260401")
    prior = ct_study(patient, slices=10, size=32, date="20250401")  # 2.5 mm apart as well
    for ds in prior:  # another visit: its own frame of reference, the table 10 mm further
        ds.FrameOfReferenceUID = "1.2.3.99"
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] - 10]
    importer([(f"s{i}", to_bytes(ds)) for i, ds in enumerate(current + prior)])
    window = open_window(reader.session, layout="1x2")
    assert window.open_study(current[0].StudyInstanceUID)
    left, right = window.grid.visible_viewports()
    assert right.study_uid == prior[0].StudyInstanceUID  # hung beside the current study
    assert left.view.index == 0 and right.view.index == 0

    left.view.set_index(6)  # the offset the two had when scrolling began is kept
    assert right.view.index == 6
    left.view.set_index(15)
    assert right.view.index == 9  # the prior's last slice is the nearest
    window.sync_action.setChecked(False)
    left.view.set_index(2)
    assert right.view.index == 9

    window.sync_action.setChecked(True)
    right.view.set_index(5)  # not the active view: it moves alone...
    assert left.view.index == 2
    left.view.set_index(3)  # ...and the active one now keeps the new pairing (2 ↔ 5)
    assert right.view.index == 6


def test_3d_on_the_offscreen_platform_refuses_plainly(qtbot: QtBot, ct_datasets: list[Dataset],
                                                     open_window: Callable[..., MainWindow],
                                                     reader: Reader) -> None:
    window = open_window(reader.session, quiet=True)
    window.mpr_action.trigger()
    assert window.errors[-1] == "Open a series first: 3D shows the series of the active viewport."
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    window.mpr_action.trigger()
    assert window.errors[-1] == "3D needs a display: VTK cannot draw on Qt's offscreen platform."


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12")
def test_painting_does_not_leak_references_to_none(view: ImageView, ct_series: SeriesImages) -> None:
    # PySide6 6.12.0 dropped a reference to None per QPainter call returning nothing: a reading
    # session then aborted the interpreter after some thousands of frames ("deallocating None").
    view.set_series(ct_series)
    view.set_annotations(True)
    qtbot_frames = 200
    gc.collect()
    gc.disable()  # (a collection of earlier tests' garbage meanwhile frees references to None too)
    try:
        before = sys.getrefcount(None)
        for i in range(qtbot_frames):
            view.set_index(i % len(ct_series))
            view.repaint()
        assert sys.getrefcount(None) - before > -qtbot_frames // 2
    finally:
        gc.enable()


def test_reference_line_of_the_active_slice_on_a_crossing_series(
        qtbot: QtBot, vault: Vault, importer: Importer, open_window: Callable[..., MainWindow],
        reader: Reader) -> None:
    patient = Patient("REF1", "Ref^Rita")
    axial = ct_study(patient, slices=8, size=32)
    sagittal = ct_study(patient, slices=4, size=32, study_uid=axial[0].StudyInstanceUID)
    series_uid = generate_uid()
    for i, ds in enumerate(sagittal):  # a sagittal reformat in the axial series' frame of reference
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 2
        ds.FrameOfReferenceUID = axial[0].FrameOfReferenceUID
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-5.0 + 5 * i, -175.0, 0.0]
    importer([(f"r{i}", to_bytes(ds)) for i, ds in enumerate(axial + sagittal)])
    window = open_window(reader.session, layout="1x2")
    assert window.open_study(axial[0].StudyInstanceUID)
    left, right = window.grid.visible_viewports()
    assert right.series_uid == series_uid
    window.grid.set_active(left)
    left.view.set_index(4)  # z = -10 mm
    ((x0, y0), (x1, y1)), = right.view._reference_lines
    row_mm = 350.0 / 32
    assert y0 == pytest.approx(10.0 / row_mm) and y1 == pytest.approx(10.0 / row_mm)
    assert sorted((x0, x1)) == pytest.approx([-0.5, 31.5])
    left.view.set_index(6)
    assert right.view._reference_lines[0][0][1] == pytest.approx(15.0 / row_mm)
