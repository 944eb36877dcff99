"""The study browser: series thumbnails, the patient's timeline of priors, and dragging a series
onto a viewport; checked on the pixels and the audit trail, and against the lock."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QFont
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.thumbnail import THUMBNAIL_SIZE
from app.ui.main_window import MainWindow
from app.ui.viewport_grid import Viewport
from app.vault import Vault
from tests.ui.conftest import Importer, Reader, image_array

SIZE = 128  # shrunk by 2 into the 64-pixel thumbnail


def _import(importer: Importer, datasets: list[Dataset], tag: str) -> None:
    assert importer([(f"{tag}-{i}", to_bytes(ds)) for i, ds in enumerate(datasets)]).imported == len(datasets)


@pytest.fixture(scope="module")
def two_series(importer: Importer) -> list[list[Dataset]]:
    """One study of a patient of its own, with two series."""
    patient = Patient("P-THUMB", "Thumb^Tom")
    first = ct_study(patient, slices=3, size=SIZE)
    second = ct_study(patient, slices=5, size=SIZE, study_uid=first[0].StudyInstanceUID)
    _import(importer, first + second, "thumb")
    return [first, second]


@pytest.fixture(scope="module")
def timeline_studies(importer: Importer) -> dict[str, list[Dataset]]:
    patient = Patient("P-TIME", "Time^Tina")
    studies = {"current": ct_study(patient, slices=2, size=32, date="20260315"),
               "mr": ct_study(patient, slices=2, size=32, date="20260101", description="MR HEAD"),
               "prior": ct_study(patient, slices=2, size=32, date="20250302", description="CT CHEST PRIOR"),
               "older": ct_study(patient, slices=2, size=32, date="20230101", description="CT CHEST OLD")}
    for ds in studies["mr"]:
        ds.Modality = "MR"
    for name, datasets in studies.items():
        _import(importer, datasets, f"time-{name}")
    return studies


def _window(open_window: Callable[..., MainWindow], reader: Reader, layout: str = "1x1") -> MainWindow:
    return open_window(reader.session, layout=layout)


def test_thumbnails_show_each_series_middle_image(qtbot: QtBot, vault: Vault, reader: Reader,
                                                  open_window: Callable[..., MainWindow],
                                                  two_series: list[list[Dataset]]) -> None:
    window = _window(open_window, reader)
    study_uid = two_series[0][0].StudyInstanceUID
    window.browser.select_study(study_uid)
    model = window.browser.series_model
    uids = [series[0].SeriesInstanceUID for series in two_series]
    qtbot.waitUntil(lambda: all(model.thumbnail(uid) is not None for uid in uids), timeout=10000)

    for uid in uids:
        row = model.row_of(uid)
        assert row is not None
        picture = image_array(model.index(row, 0).data(Qt.ItemDataRole.DecorationRole).toImage())
        assert picture.shape[:2] == (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
        grey = picture[..., 0].astype(int)
        # The phantom through its 40/400 window: air black, water mid-grey, the bone rod white.
        assert grey[0, 0] == 0 and abs(grey[32, 32] - 102) <= 3 and grey.max() >= 250
    assert window.browser.series_table.rowHeight(0) >= THUMBNAIL_SIZE
    # Seeing thumbnails is seeing the patient's images: one audited access for the study.
    reads = vault._gate._audit.records(AuditQuery(user=reader.name, event_type=EventType.INSTANCES_READ))
    assert [r.detail for r in reads] == [{"thumbnails": 2}] and reads[0].studies == (study_uid,)


def test_thumbnails_go_with_the_lock_and_a_late_answer_is_dropped(
        qtbot: QtBot, vault: Vault, reader: Reader, open_window: Callable[..., MainWindow],
        two_series: list[list[Dataset]], monkeypatch: pytest.MonkeyPatch) -> None:
    window = _window(open_window, reader)
    model = window.browser.series_model
    uid = two_series[0][0].SeriesInstanceUID
    window.browser.select_study(two_series[0][0].StudyInstanceUID)
    qtbot.waitUntil(lambda: model.thumbnail(uid) is not None, timeout=10000)
    window.lock()
    assert model.rowCount() == 0 and model.thumbnail(uid) is None

    # A slow decode whose answer arrives after the lock must not reach the screen.
    entered, release, answered = threading.Event(), threading.Event(), threading.Event()
    real = vault.reading.thumbnails

    def slow(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        entered.set()
        release.wait(10)
        try:
            return real(*args, **kwargs)
        finally:
            answered.set()

    monkeypatch.setattr(vault.reading, "thumbnails", slow)
    other = _window(open_window, reader)
    other.browser.select_study(two_series[0][0].StudyInstanceUID)
    qtbot.waitUntil(entered.is_set, timeout=10000)  # the request went out once the selection settled
    other.lock()
    release.set()
    assert answered.wait(10)
    qtbot.wait(100)  # the answer's queued call on the GUI thread has run
    assert other.browser.series_model.rowCount() == 0
    assert other.browser.series_model.thumbnail(uid) is None


def test_timeline_lists_the_patients_studies_and_marks_the_prior(
        qtbot: QtBot, reader: Reader, open_window: Callable[..., MainWindow],
        timeline_studies: dict[str, list[Dataset]]) -> None:
    window = _window(open_window, reader, "1x2")
    uid = {name: datasets[0].StudyInstanceUID for name, datasets in timeline_studies.items()}
    timeline = window.browser.timeline
    window.browser.select_study(uid["current"])
    assert timeline.study_uids() == [uid["current"], uid["mr"], uid["prior"], uid["older"]]
    assert timeline.prior_uid() == uid["prior"]  # the latest earlier CT, not the later MR
    assert timeline.currentItem().data(Qt.ItemDataRole.UserRole) == uid["current"]
    assert timeline.currentItem().font().weight() == QFont.Weight.Bold
    assert "CT CHEST PRIOR" in timeline.item(2).text() and "2025-03-02" in timeline.item(2).text()

    # A click lists that study's series; the timeline stays the patient's.
    timeline.setCurrentRow(3)
    assert window.browser.current_study_uid() == uid["older"]
    assert window.browser.series_model.records[0].study_uid == uid["older"]
    assert timeline.study_uids()[3] == uid["older"] and timeline.prior_uid() is None

    # Enter (or a double-click) opens it: the prior goes beside it.
    timeline.setCurrentRow(2)
    timeline.itemActivated.emit(timeline.currentItem())
    left, right = window.grid.visible_viewports()
    assert left.study_uid == uid["prior"] and right.study_uid == uid["older"]


def _drop(target: QWidget, data: QMimeData) -> bool:
    """Drag ``data`` into ``target`` and drop it; whether the target took it."""
    centre = target.rect().center()
    enter = QDragEnterEvent(centre, Qt.DropAction.CopyAction | Qt.DropAction.MoveAction, data,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(QPointF(QPoint(centre)), Qt.DropAction.CopyAction | Qt.DropAction.MoveAction, data,
                      Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QEvent.Type.Drop)
    QApplication.sendEvent(target, drop)
    return drop.isAccepted()


def test_drag_a_series_onto_a_viewport(qtbot: QtBot, reader: Reader, open_window: Callable[..., MainWindow],
                                       two_series: list[list[Dataset]],
                                       grab_pixels: Callable[[QWidget], np.ndarray]) -> None:
    window = _window(open_window, reader, "1x2")
    first, second = (series[0].SeriesInstanceUID for series in two_series)
    assert window.open_study(two_series[0][0].StudyInstanceUID)
    left, right = window.grid.visible_viewports()
    assert isinstance(right, Viewport)
    model = window.browser.series_model
    row = model.row_of(first)
    assert model.flags(model.index(row, 0)) & Qt.ItemFlag.ItemIsDragEnabled
    data = model.mimeData([model.index(row, 2)])
    assert not data.hasText()  # nothing another application would take

    assert _drop(right, data)
    assert right.series_uid == first and window.grid.active is right
    rect = right.view.image_rect()
    shown = grab_pixels(right.view)[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert len(np.unique(shown)) >= 3
    assert left.series_uid in (first, second)

    plain = QMimeData()
    plain.setText(second)
    assert not _drop(left, plain)  # a text drag from elsewhere is refused
    assert right.series_uid == first


def test_help_lists_the_browser_and_every_shortcut(reader: Reader,
                                                   open_window: Callable[..., MainWindow]) -> None:
    window = _window(open_window, reader)
    text = window.help_text()
    assert "drag a series onto any viewport" in text and "Timeline" in text
    for shortcut in ("Ctrl+M", "Ctrl+E", "Ctrl+L", "Ctrl+4", "F5", "S: Synchronise scrolling"):
        assert shortcut in text
    assert "F2: " in text and "Ctrl+H" in text  # the viewport's own keys


def test_viewport_keys_win_over_window_shortcuts(qtbot: QtBot, reader: Reader,
                                                 open_window: Callable[..., MainWindow],
                                                 two_series: list[list[Dataset]]) -> None:
    window = _window(open_window, reader)
    assert window.open_study(two_series[0][0].StudyInstanceUID)
    with qtbot.waitActive(window):  # shortcuts reach only the active window
        window.activateWindow()
    view = window.grid.active.view
    view.setFocus()
    refreshed: list[bool] = []
    window.browser.study_model.modelReset.connect(lambda: refreshed.append(True))
    qtbot.keyClick(view, Qt.Key.Key_F5)  # in a viewport: the lung window, not "refresh"
    assert view.window is not None and (view.window.center, view.window.width) == (-600, 1500)
    assert refreshed == []
    synced = window.sync_action.isChecked()
    qtbot.keyClick(view, Qt.Key.Key_S)  # not a viewport key: the window's shortcut still works
    assert window.sync_action.isChecked() is not synced


def test_one_viewport_per_series(qtbot: QtBot, reader: Reader, open_window: Callable[..., MainWindow],
                                 importer: Importer) -> None:
    patient = Patient("P-MANY", "Many^Series")
    first = ct_study(patient, slices=2, size=16)
    study_uid = first[0].StudyInstanceUID
    series = [first] + [ct_study(patient, slices=2, size=16, study_uid=study_uid) for _ in range(4)]
    _import(importer, [ds for datasets in series for ds in datasets], "many")
    window = _window(open_window, reader)
    window.browser.select_study(study_uid)
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keySequence(window, "Ctrl+0")
    assert window.grid.layout_name == "2x3" and window.layout_actions["2x3"].isChecked()
    shown = [v.series_uid for v in window.grid.visible_viewports()]
    assert set(shown[:5]) == {datasets[0].SeriesInstanceUID for datasets in series}
    assert shown[5] is None and len(window.grid.viewports) == 9
    assert all(v.view.series is not None for v in window.grid.visible_viewports()[:5])
