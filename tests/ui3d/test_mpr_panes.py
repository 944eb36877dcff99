"""The MPR window's planes on Qt's offscreen platform: they need no OpenGL, so what they show and
say is checked here quickly; the real window, its timing and the 3D view are checked under Xvfb
(test_mpr_opening.py, test_mpr_window.py)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.imaging.pixels import Decoded, FrameInfo, decode_frames
from app.imaging.series import SeriesImages
from app.imaging.volume import plan_volume
from app.ui.mpr_window import MprWindow
from tests.imaging.frames import info_of
from tests.ui3d.panes import agreement, grab, placement, reference

SLICES, SIZE = 30, 96
PLANES = ("axial", "coronal", "sagittal")


@pytest.fixture(scope="module")
def datasets() -> list[Dataset]:
    return ct_study(Patient("MPR3", "Pane^Test"), slices=SLICES, size=SIZE)


def _series(datasets: list[Dataset],
            load: Callable[[FrameInfo, bytes], Decoded] = decode_frames) -> SeriesImages:
    data = {ds.SOPInstanceUID: to_bytes(ds) for ds in datasets}
    return SeriesImages([info_of(raw) for raw in data.values()], lambda info: load(info, data[info.sop_uid]),
                        modality="CT")


@pytest.fixture
def window(qtbot: QtBot, datasets: list[Dataset]) -> MprWindow:
    series = _series(datasets)
    shown = MprWindow(series, plan_volume(series))
    qtbot.addWidget(shown)
    shown.show()
    assert shown.progress.isVisible(), "the loading progress is up before the volume is"
    qtbot.waitUntil(lambda: shown.state is not None and not shown.progress.isVisible(), timeout=20000)
    return shown


def _yellow(image: np.ndarray) -> np.ndarray:
    """Pixels in the overlay text's yellow (not the cursor lines' orange, green or blue)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r > 150) & (g > 0.8 * r) & (b < 0.75 * g)


def test_the_planes_show_the_volume_and_say_where_they_are(window: MprWindow) -> None:
    for plane, pane in window.panes.items():
        assert agreement(grab(pane), reference(window, plane), placement(pane)) > 0.95
    texts = {plane: pane.texts() for plane, pane in window.panes.items()}
    assert texts["axial"] == {"title": "Axial", "slab": "", "position": f"16/{SLICES}  -35.0 mm",
                              "window": "W:400 L:40", "left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert (texts["coronal"]["top"], texts["coronal"]["bottom"]) == ("H", "F")
    assert (texts["sagittal"]["left"], texts["sagittal"]["right"]) == ("A", "P")
    window.set_slab("mip", 10.0)  # four slices of 2.5 mm: five, centred on the cursor
    window.set_tilt(30.0)
    axial = window.panes["axial"].texts()
    assert (axial["title"], axial["slab"], axial["top"], axial["bottom"]) == ("Oblique +30°", "MIP 5 slices",
                                                                             "AF", "PH")


def test_ctrl_h_hides_and_shows_the_text(qtbot: QtBot, window: MprWindow) -> None:
    pane = window.panes["axial"]
    assert _yellow(grab(pane)).sum() > 50
    with qtbot.waitActive(window):  # shortcuts reach only the active window
        window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_H, Qt.KeyboardModifier.ControlModifier)
    assert _yellow(grab(pane)).sum() == 0
    qtbot.keyClick(window, Qt.Key.Key_H, Qt.KeyboardModifier.ControlModifier)
    assert _yellow(grab(pane)).sum() > 50


def test_a_right_drag_windows_all_three_planes(qtbot: QtBot, window: MprWindow) -> None:
    pane = window.panes["coronal"]
    before = {plane: grab(p) for plane, p in window.panes.items()}
    centre = pane.rect().center()
    qtbot.mousePress(pane, Qt.MouseButton.RightButton, pos=centre)
    qtbot.mouseMove(pane, centre + QPoint(125, 50))  # wider by half the width, level up by a fifth
    qtbot.mouseRelease(pane, Qt.MouseButton.RightButton, pos=centre + QPoint(125, 50))
    assert (window.voi_window.center, window.voi_window.width) == pytest.approx((120, 600))
    for plane, p in window.panes.items():
        assert p.texts()["window"] == "W:600 L:120"
        assert not np.array_equal(grab(p), before[plane])


def test_the_wheel_and_the_arrow_keys_step_through_the_slices(qtbot: QtBot, window: MprWindow) -> None:
    assert window.state is not None
    pane, start = window.panes["sagittal"], window.state.cursor["sagittal"]
    centre = QPointF(pane.rect().center())
    towards_the_reader = QWheelEvent(centre, pane.mapToGlobal(centre), QPoint(), QPoint(0, -3 * 120),
                                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                                     Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(pane, towards_the_reader)
    assert window.state.cursor["sagittal"] == start + 3
    pane.setFocus()
    qtbot.keyClick(pane, Qt.Key.Key_Up)
    assert window.state.cursor["sagittal"] == start + 2
    assert pane.texts()["position"].startswith(f"{start + 3}/{SIZE}  ")


def test_closing_lets_the_volume_go(qtbot: QtBot, window: MprWindow) -> None:
    qtbot.waitUntil(lambda: window.volume_pane.message == "3D rendering needs a display; the planes do not.")
    window.close()
    assert window.state is None and all(p.view is None for p in window.panes.values())


def test_closing_while_the_volume_loads_keeps_nothing(qtbot: QtBot, datasets: list[Dataset]) -> None:
    series = _series(datasets)
    shown = MprWindow(series, plan_volume(series))
    qtbot.addWidget(shown)
    shown.show()
    shown.close()
    qtbot.wait(1500)  # the loading thread stops, or finishes, and what it sends is dropped
    assert shown.state is None and all(p.view is None for p in shown.panes.values())


def test_a_slice_that_cannot_be_decoded_is_said_in_the_panes(qtbot: QtBot, datasets: list[Dataset]) -> None:
    def damaged(info: FrameInfo, data: bytes) -> Decoded:  # a fault no real store produces on demand
        if info.sop_uid == datasets[7].SOPInstanceUID:
            raise CustodianError("This image could not be decoded.")
        return decode_frames(info, data)

    series = _series(datasets, damaged)
    shown = MprWindow(series, plan_volume(series))
    qtbot.addWidget(shown)
    shown.show()
    qtbot.waitUntil(lambda: not shown.progress.isVisible(), timeout=20000)
    said = {p.message for p in shown.panes.values()}
    assert said == {"3D could not be built: This image could not be decoded."}
    assert shown.state is None and not shown.controls.isEnabled()
