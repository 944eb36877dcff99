"""Measuring in a viewport, driven with the mouse and keys and checked on the pixels shown: the
tools, selecting, moving, editing and deleting, the probe and loupe, label placement, the tool strip,
and what the vault keeps.

The CT phantom is 64 × 64 pixels of 350/64 mm shown at 4 screen pixels per image pixel: a water
cylinder (0 HU) of radius 25.6 pixels round (32, 32) and a bone rod (1000 HU) of radius 3.84
pixels round (25.6, 32).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QLineEdit, QMenu, QVBoxLayout, QWidget
from pytestqt.qtbot import QtBot

from app.imaging.measure import Kind, Measurement
from app.imaging.series import SeriesImages
from app.security.sessions import Session
from app.ui.image_view import ImageView
from app.ui.main_window import MainWindow
from app.ui.measure_painting import HANDLE_COLOUR, PROBE_COLOUR
from app.ui.view_controls import Tool
from app.vault import Vault
from tests.ui.conftest import Reader

Grab = Callable[[QWidget], np.ndarray]
SPACING = 350.0 / 64
SIDE = 256


@pytest.fixture
def ct_series(vault: Vault, session: Session, ct_datasets: list[Dataset]) -> SeriesImages:
    return vault.reading.open_series(session, ct_datasets[0].SeriesInstanceUID)


@pytest.fixture
def view(qtbot: QtBot, ct_series: SeriesImages) -> ImageView:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(SIDE, SIDE)
    view.set_annotations(False)
    view.set_smooth(False)
    view.show()
    qtbot.waitExposed(view)
    view.setFocus()
    view.set_series(ct_series)
    return view


def at(view: ImageView, x: float, y: float) -> QPoint:
    return view.to_widget((x, y)).toPoint()


def drag(qtbot: QtBot, view: QWidget, start: QPoint, *through: QPoint,
         button: Qt.MouseButton = Qt.MouseButton.LeftButton) -> None:
    qtbot.mousePress(view, button, pos=start)
    for point in through:
        qtbot.mouseMove(view, point)
    qtbot.mouseRelease(view, button, pos=through[-1] if through else start)


def colour_near(pixels: np.ndarray, point: QPoint, colour: tuple[int, int, int], reach: int = 2) -> bool:
    patch = pixels[point.y() - reach: point.y() + reach + 1, point.x() - reach: point.x() + reach + 1]
    return bool((np.abs(patch.astype(int) - colour).sum(axis=2) < 30).any())


def rgb(colour: object) -> tuple[int, int, int]:
    return colour.red(), colour.green(), colour.blue()  # type: ignore[attr-defined]


def test_a_rectangle_roi_shows_handles_and_delete_gives_the_image_back(qtbot: QtBot, view: ImageView,
                                                                     grab_pixels: Grab) -> None:
    before = grab_pixels(view)
    qtbot.keyClick(view, Qt.Key.Key_B)
    drag(qtbot, view, at(view, 20, 28), at(view, 40, 36))
    (roi,) = view.measurements
    assert roi.kind is Kind.RECTANGLE and view.selected == roi
    text = view.measurement_labels()[0]
    assert "Min -" not in text and "Max 1000.0 HU" in text and text.startswith("Mean ")
    drawn = grab_pixels(view)
    corners = [at(view, x, y) for x in (20, 40) for y in (28, 36)]
    handle = rgb(HANDLE_COLOUR)
    assert all(colour_near(drawn, corner, handle) for corner in corners), "a handle at each corner"
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert view.measurements == []
    assert np.array_equal(grab_pixels(view), before), "the image as it was, handles and label gone"
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the delete
    assert [m.points for m in view.measurements] == [roi.points]


def test_a_focusing_click_with_a_tool_makes_nothing(qtbot: QtBot, ct_series: SeriesImages, grab_pixels: Grab,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    form = QWidget()
    qtbot.addWidget(form)
    field = QLineEdit(form)
    view = ImageView(form)
    column = QVBoxLayout(form)
    column.addWidget(field)
    column.addWidget(view)
    form.resize(SIDE, SIDE + 40)
    form.show()
    qtbot.waitExposed(form)
    view.set_series(ct_series)
    view.set_tool(Tool.TEXT)
    asked: list[str] = []
    monkeypatch.setattr(view, "ask_text", lambda current: asked.append(current) or "note")
    field.setFocus()
    qtbot.waitUntil(field.hasFocus)
    before = grab_pixels(view)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 30, 30))
    assert view.hasFocus(), "the click brought the focus"
    assert view.measurements == [] and asked == [], "and did nothing else: no note, no dialog"
    assert np.array_equal(grab_pixels(view), before)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 30, 30))
    assert [m.text for m in view.measurements] == ["note"] and asked == [""]


def test_select_move_and_edit_a_length(qtbot: QtBot, view: ImageView) -> None:
    made: list[Measurement] = []
    removed: list[Measurement] = []
    view.measured.connect(made.append)
    view.measurementRemoved.connect(removed.append)
    qtbot.keyClick(view, Qt.Key.Key_D)
    drag(qtbot, view, at(view, 10, 50), at(view, 30, 50))
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert view.tool is Tool.WINDOW and view.selected is None
    (line,) = view.measurements
    window = view.window

    drag(qtbot, view, at(view, 20, 50), at(view, 22, 50), at(view, 25, 52))  # the line's middle, moved
    (moved,) = view.measurements
    assert view.window == window, "dragging a measurement is not windowing"
    assert np.allclose(moved.points, np.add(line.points, (5, 2)), atol=0.3)
    assert view.selected == moved and removed == [line] and made[-1] == moved

    drag(qtbot, view, at(view, *moved.points[1]), at(view, 40, 40))  # its end, by the handle
    (edited,) = view.measurements
    assert edited.points[0] == moved.points[0]
    assert np.allclose(edited.points[1], (40, 40), atol=0.3)
    assert removed == [line, moved] and made[-1] == edited
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 5, 5))  # elsewhere: deselects
    assert view.selected is None and view.measurements == [edited]


def test_cobb_freehand_and_arrow(qtbot: QtBot, view: ImageView, monkeypatch: pytest.MonkeyPatch) -> None:
    qtbot.keyClick(view, Qt.Key.Key_K)
    drag(qtbot, view, at(view, 10, 10), at(view, 30, 10))  # one endplate, level
    drag(qtbot, view, at(view, 10, 30), at(view, 30, 50))  # the other at 45°
    assert view.measurement_labels() == ["Cobb 45.0°"]

    qtbot.keyClick(view, Qt.Key.Key_L)
    square = [(40, 40), (56, 40), (56, 56), (40, 56)]
    drag(qtbot, view, *[at(view, x, y) for x, y in square], at(view, 40, 41))
    freehand = view.measurements[-1]
    assert freehand.kind is Kind.FREEHAND and len(freehand.points) >= 4
    text = view.measurement_labels()[-1]
    assert text.startswith("Mean ") and "HU" in text
    assert float(text.rsplit("Area ", 1)[1].split()[0]) == pytest.approx(16 * 16 * SPACING ** 2, rel=0.02)

    qtbot.keyClick(view, Qt.Key.Key_W)
    drag(qtbot, view, at(view, 5, 60), at(view, 20, 45))
    arrow = view.measurements[-1]
    assert arrow.kind is Kind.ARROW and arrow.text == ""
    monkeypatch.setattr(view, "ask_text", lambda current: "fracture")
    qtbot.mouseDClick(view, Qt.MouseButton.LeftButton, pos=at(view, 12, 53))
    assert view.measurements[-1].text == "fracture" and view.measurement_labels()[-1] == "fracture"


def test_labels_keep_clear_of_each_other_and_the_annotations(qtbot: QtBot, view: ImageView) -> None:
    view.set_annotations(True)
    qtbot.keyClick(view, Qt.Key.Key_D)
    for start in ((10, 40), (12, 56), (40, 60)):  # three lengths ending at the same point
        drag(qtbot, view, at(view, *start), at(view, 58, 58))
    qtbot.keyClick(view, Qt.Key.Key_E)
    drag(qtbot, view, at(view, 44, 44), at(view, 58, 58))
    view.grab()
    labels = view.label_boxes
    assert len(labels) == 4
    assert not any(box.contains(at(view, 58, 58)) for box in labels), "the ends stay in sight to take hold of"
    for i, box in enumerate(labels):
        assert view.rect().contains(box)
        assert not any(box.intersects(other) for other in labels[i + 1:])
        assert not any(box.intersects(mark) for mark in view.annotation_boxes.values())


def test_probe_and_loupe_show_while_the_button_is_held(qtbot: QtBot, view: ImageView,
                                                       grab_pixels: Grab) -> None:
    before = grab_pixels(view)
    rod = at(view, 25.6, 32)
    probe = rgb(PROBE_COLOUR)
    qtbot.keyClick(view, Qt.Key.Key_G)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=rod)
    held = grab_pixels(view)
    assert colour_near(held, rod + QPoint(6, 0), probe), "the probe's cross"
    assert colour_near(held, rod + QPoint(20, 18), probe, reach=8), "its value beside it"
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=rod)
    assert np.array_equal(grab_pixels(view), before) and view.measurements == []

    def white(pixels: np.ndarray) -> int:
        return int((pixels == 255).all(axis=2).sum())

    qtbot.keyClick(view, Qt.Key.Key_M)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=rod)
    loupe = grab_pixels(view)
    assert white(loupe) > 3 * white(before), "the bone rod at twice the size under the loupe"
    x, y = rod.x(), rod.y()
    magnified = loupe[y - 60: y + 60: 8, x - 60: x + 60: 8]
    shown = before[y - 30: y + 30: 4, x - 30: x + 30: 4]
    assert np.array_equal(magnified[2:-2, 2:-2], shown[2:-2, 2:-2]), "each shown pixel twice as large"
    qtbot.mouseMove(view, rod + QPoint(40, 0))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=rod + QPoint(40, 0))
    assert np.array_equal(grab_pixels(view), before)


def test_the_loupe_shows_the_measurements_under_it_magnified(qtbot: QtBot, view: ImageView,
                                                             grab_pixels: Grab) -> None:
    qtbot.keyClick(view, Qt.Key.Key_D)
    drag(qtbot, view, at(view, 20, 40), at(view, 44, 40))
    centre = at(view, 32, 36)  # the line is 16 screen pixels below: 32 under the loupe
    qtbot.keyClick(view, Qt.Key.Key_M)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=centre)
    loupe = grab_pixels(view)
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=centre)

    def line_at(y: int) -> bool:  # the measurement's green, antialiased over two rows
        rows = loupe[y - 2: y + 3, centre.x() - 20: centre.x() + 20].astype(int)
        return bool((rows[..., 1] - rows[..., [0, 2]].max(axis=2) > 50).any())

    assert line_at(centre.y() + 32), "the line where the loupe shows it"
    assert not line_at(centre.y() + 16), "not where the loupe covers it"


def test_the_context_menu_deletes_all_on_the_image_and_undoes_it(qtbot: QtBot, view: ImageView) -> None:
    qtbot.keyClick(view, Qt.Key.Key_D)
    drag(qtbot, view, at(view, 10, 10), at(view, 30, 10))
    drag(qtbot, view, at(view, 10, 20), at(view, 30, 20))
    qtbot.keyClick(view, Qt.Key.Key_Down)
    drag(qtbot, view, at(view, 10, 30), at(view, 30, 30))  # on the next image: stays
    qtbot.keyClick(view, Qt.Key.Key_Up)

    def choose(text: str) -> None:
        qtbot.mouseClick(view, Qt.MouseButton.RightButton, pos=at(view, 50, 50))
        qtbot.waitUntil(lambda: isinstance(QApplication.activePopupWidget(), QMenu))
        menu = QApplication.activePopupWidget()
        assert isinstance(menu, QMenu)
        (action,) = [a for a in menu.actions() if a.text().startswith(text)]
        action.trigger()
        menu.close()

    choose("Delete all on this image (2)")
    assert view.measurement_labels() == [] and len(view.measurements) == 1
    choose("Undo delete")
    assert len(view.measurement_labels()) == 2


def test_the_tool_strip_shows_the_tool_in_use_in_every_viewport(
        qtbot: QtBot, ct_datasets: list[Dataset], reader: Reader, grab_pixels: Grab,
        open_window: Callable[..., MainWindow]) -> None:
    window = open_window(reader.session, layout="1x2")
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    strip = window.window_actions.tools
    assert strip.isVisible() and strip.tool is Tool.WINDOW
    pressed = (0x34, 0x47, 0x5E)  # the theme's checked tool button

    def looks_pressed(tool: Tool) -> bool:
        button = strip.widgetForAction(strip.tool_actions[tool])
        return bool((np.abs(grab_pixels(button).astype(int) - pressed).sum(axis=2) < 12).mean() > 0.3)

    assert looks_pressed(Tool.WINDOW) and not looks_pressed(Tool.DISTANCE)
    assert "(D in a viewport)" in strip.tool_actions[Tool.DISTANCE].toolTip()
    view = window.grid.active.view
    qtbot.keyClick(view, Qt.Key.Key_D)
    assert looks_pressed(Tool.DISTANCE) and not looks_pressed(Tool.WINDOW)
    assert all(v.view.tool is Tool.DISTANCE for v in window.grid.viewports)
    action: QAction = strip.tool_actions[Tool.ELLIPSE]
    action.trigger()
    assert view.tool is Tool.ELLIPSE and looks_pressed(Tool.ELLIPSE)
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert strip.tool is Tool.WINDOW and looks_pressed(Tool.WINDOW)
    window.lock()
    assert not strip.isVisible()


def test_edits_and_new_kinds_are_kept_in_the_vault(
        qtbot: QtBot, vault: Vault, ct_datasets: list[Dataset], reader: Reader,
        open_window: Callable[..., MainWindow]) -> None:
    series_uid = ct_datasets[0].SeriesInstanceUID
    window = open_window(reader.session)
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    view = window.grid.active.view
    qtbot.keyClick(view, Qt.Key.Key_L)
    drag(qtbot, view, *[at(view, x, y) for x, y in ((40, 40), (56, 40), (56, 56), (40, 56))])
    qtbot.keyClick(view, Qt.Key.Key_K)
    drag(qtbot, view, at(view, 10, 10), at(view, 30, 10))
    drag(qtbot, view, at(view, 10, 30), at(view, 30, 50))
    freehand, cobb = vault.reading.measurements(reader.session, series_uid)
    assert (freehand.kind, cobb.kind) == (Kind.FREEHAND, Kind.COBB) and view.measurements == [freehand, cobb]
    drag(qtbot, view, at(view, *cobb.points[3]), at(view, 30, 30))  # the second line made level
    (_, level) = vault.reading.measurements(reader.session, series_uid)
    assert level.points[:3] == cobb.points[:3] and level.points[3] != cobb.points[3]
    assert view.measurements[-1] == level
    assert view.measurement_labels()[-1] == "Cobb 0.0°"
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert vault.reading.measurements(reader.session, series_uid) == [freehand]
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    (_, back) = vault.reading.measurements(reader.session, series_uid)
    assert back.points == level.points and back.id is not None
