"""ImageView against pixels computed here from the DICOM stored values, not from the core."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.series import SeriesImages
from app.security import totp
from app.security.sessions import Session
from app.ui.image_view import DRAG_PIXELS_PER_WIDTH, ImageView
from app.vault import Vault
from tests.ui.conftest import Importer

ZOOM = 4
SIZE = 64
VIEW_WIDTH, VIEW_HEIGHT = SIZE * ZOOM, SIZE * ZOOM + 64  # 32-pixel black bands above and below
IMAGE_AREA = QRect(0, 32, SIZE * ZOOM, SIZE * ZOOM)

Grab = Callable[[QWidget], np.ndarray]


def stack(series: SeriesImages, datasets: list[Dataset]) -> list[Dataset]:
    """The data sets in the series' display order (slice ordering is the core's to test)."""
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    return [by_uid[series.info(i).sop_uid] for i in range(len(series))]


def reference(ds: Dataset, center: float, width: float, *, invert: bool = False) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear VOI LUT on rescaled stored values, in float64, to 0..255."""
    values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    y = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    y[values <= center - 0.5 - (width - 1) / 2] = 0.0
    y[values > center - 0.5 + (width - 1) / 2] = 255.0
    if invert:
        y = 255.0 - y
    return y


def image_area(pixels: np.ndarray) -> np.ndarray:
    """The frame's pixels from a grab, one screen block per image pixel (checked uniform)."""
    area = pixels[IMAGE_AREA.top(): IMAGE_AREA.bottom() + 1, IMAGE_AREA.left(): IMAGE_AREA.right() + 1]
    assert (area[..., 0] == area[..., 1]).all() and (area[..., 1] == area[..., 2]).all(), "not grey"
    grey = area[..., 0].astype(np.int16)
    blocks = grey.reshape(SIZE, ZOOM, SIZE, ZOOM)
    assert (blocks == blocks[:, :1, :, :1]).all(), "nearest-neighbour blocks are not uniform"
    return grey[::ZOOM, ::ZOOM]


def assert_shows(view: ImageView, grab: Grab, expected: np.ndarray) -> np.ndarray:
    """The image area equals ``expected`` within one grey level of rounding."""
    shown = image_area(grab(view))
    difference = np.abs(shown - expected)
    assert difference.max() <= 1, f"{int((difference > 1).sum())} pixels off by up to {difference.max()}"
    return shown


def wheel(widget: QWidget, notches: int) -> None:
    """Turn the wheel; positive notches roll away from the reader."""
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


@pytest.fixture
def ct_series(vault: Vault, session: Session, ct_datasets: list[Dataset]) -> SeriesImages:
    return vault.reading.open_series(session, ct_datasets[0].SeriesInstanceUID)


@pytest.fixture
def view(qtbot: QtBot) -> ImageView:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(VIEW_WIDTH, VIEW_HEIGHT)
    view.set_annotations(False)  # pixel checks see the image alone; annotations are tested apart
    view.set_smooth(False)  # one uniform block of its exact value per image pixel (see test_view_display)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_pixels_equal_the_ps33_window_of_the_stored_values(view: ImageView, ct_series: SeriesImages,
                                                           ct_datasets: list[Dataset], grab_pixels: Grab):
    view.set_series(ct_series)

    assert view.index == 0
    assert view.window == Window(40, 400)
    assert view.image_rect() == IMAGE_AREA
    shown = assert_shows(view, grab_pixels, reference(stack(ct_series, ct_datasets)[0], 40, 400))
    assert {0, 255} <= set(np.unique(shown)), "air and bone should clip to black and white"
    pixels = grab_pixels(view)
    assert not pixels[: IMAGE_AREA.top()].any(), "the band above the image must be black"
    assert view.overlay_text()[0].splitlines()[-1] == "Im 1/10"
    assert view.overlay_text()[1] == "W:400 L:40"
    view.set_annotations(True)
    pixels = grab_pixels(view)
    band = pixels[IMAGE_AREA.bottom() + 1:].astype(int)
    yellowish = (band[..., 0] > 150) & (band[..., 1] > 120) & (band[..., 2] < band[..., 0] - 40)
    assert yellowish[:, : VIEW_WIDTH // 3].any() and yellowish[:, -VIEW_WIDTH // 3:].any(), \
        "overlay text missing from the bottom corners"


def test_wheel_scrolls_slices_and_stops_at_the_ends(view: ImageView, ct_series: SeriesImages,
                                                   ct_datasets: list[Dataset], grab_pixels: Grab):
    ordered = stack(ct_series, ct_datasets)
    view.set_series(ct_series)
    seen: list[int] = []
    view.indexChanged.connect(seen.append)

    wheel(view, +1)  # already at the first image
    assert view.index == 0 and seen == []
    wheel(view, -1)
    assert view.index == 1
    assert_shows(view, grab_pixels, reference(ordered[1], 40, 400))
    wheel(view, -20)
    assert view.index == 9 and seen == [1, 9]
    last = assert_shows(view, grab_pixels, reference(ordered[9], 40, 400))
    assert view.overlay_text()[0].endswith("Im 10/10")
    wheel(view, -1)
    assert view.index == 9 and seen == [1, 9]
    wheel(view, +20)
    assert view.index == 0
    first = assert_shows(view, grab_pixels, reference(ordered[0], 40, 400))
    assert (first != last).any(), "the first and last slices differ (the bone rod drifts)"


def test_keys_scroll(qtbot: QtBot, view: ImageView, ct_series: SeriesImages):
    view.set_series(ct_series)
    for key, expected in [(Qt.Key.Key_Down, 1), (Qt.Key.Key_PageDown, 2), (Qt.Key.Key_End, 9),
                          (Qt.Key.Key_Down, 9), (Qt.Key.Key_Up, 8), (Qt.Key.Key_PageUp, 7),
                          (Qt.Key.Key_Home, 0), (Qt.Key.Key_Up, 0)]:
        qtbot.keyClick(view, key)
        assert view.index == expected, Qt.Key(key).name


def test_drag_changes_the_window_and_r_resets_it(qtbot: QtBot, view: ImageView, ct_series: SeriesImages,
                                                 ct_datasets: list[Dataset], grab_pixels: Grab):
    ordered = stack(ct_series, ct_datasets)
    view.set_series(ct_series)
    windows: list[Window] = []
    view.windowChanged.connect(windows.append)
    unit = 400 / DRAG_PIXELS_PER_WIDTH
    start = QPoint(VIEW_WIDTH // 2, VIEW_HEIGHT // 2)

    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(view, start + QPoint(100, -50))  # right: wider; up: lower level
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=start + QPoint(100, -50))

    dragged = Window(40 - 50 * unit, 400 + 100 * unit)
    assert view.window == pytest.approx(dragged)
    assert windows and windows[-1] == view.window
    assert_shows(view, grab_pixels, reference(ordered[0], dragged.center, dragged.width))
    assert view.overlay_text()[1] == f"W:{dragged.width:.0f} L:{dragged.center:.0f}"

    wheel(view, -1)  # a window the reader chose stays while scrolling
    assert view.window == pytest.approx(dragged)
    assert_shows(view, grab_pixels, reference(ordered[1], dragged.center, dragged.width))

    qtbot.keyClick(view, Qt.Key.Key_R)
    assert view.window == Window(40, 400)
    assert windows[-1] == Window(40, 400)
    assert_shows(view, grab_pixels, reference(ordered[1], 40, 400))


def test_narrow_windows_never_go_below_one(qtbot: QtBot, view: ImageView, ct_series: SeriesImages):
    view.set_series(ct_series)
    start = QPoint(VIEW_WIDTH - 10, VIEW_HEIGHT // 2)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=start)
    end = QPoint(-200, VIEW_HEIGHT // 2)  # the drag may leave the widget
    qtbot.mouseMove(view, end)
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=end)
    assert view.window is not None and view.window.width == 1.0


def test_monochrome1_renders_inverted(view: ImageView, vault: Vault, session: Session,
                                      ct_datasets: list[Dataset], grab_pixels: Grab, importer: Importer):
    study_uid, series_uid = generate_uid(), generate_uid()
    inverted = []
    for original in ct_datasets:
        ds = copy.deepcopy(original)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PhotometricInterpretation = "MONOCHROME1"
        inverted.append(ds)
    importer([(f"m1-{i}", to_bytes(ds)) for i, ds in enumerate(inverted)])

    series = vault.reading.open_series(session, series_uid)
    view.set_series(series)

    shown = assert_shows(view, grab_pixels, reference(stack(series, inverted)[0], 40, 400, invert=True))
    assert shown.max() == 255 and shown.min() == 0
    assert shown[0, 0] == 255, "air, black in MONOCHROME2, is white in MONOCHROME1"


def test_pixel_spacing_sets_the_displayed_aspect(view: ImageView, vault: Vault, session: Session,
                                                 grab_pixels: Grab, importer: Importer):
    (ds,) = ct_study(Patient("P2", "Roe^Richard"), slices=1, size=SIZE)
    ds.PixelSpacing = [0.5, 1.0]  # rows 0.5 mm apart, columns 1 mm: pixels twice as wide as high
    importer([("anisotropic", to_bytes(ds))])

    view.set_series(vault.reading.open_series(session, ds.SeriesInstanceUID))

    # 64 × 32 mm fitted into 256 × 320: 4 screen pixels per column, 2 per row, centred vertically.
    assert view.image_rect() == QRect(0, 96, 256, 128)
    pixels = grab_pixels(view)
    area = pixels[96:224, :, 0].astype(np.int16)
    assert (area.reshape(SIZE, 2, SIZE, 4) == area[::2, ::4][:, None, :, None]).all()
    assert np.abs(area[::2, ::4] - reference(ds, 40, 400)).max() <= 1
    assert not pixels[:96].any() and not pixels[224:-24].any(), "outside the frame is black"


def test_no_series_shows_nothing(view: ImageView, ct_series: SeriesImages, grab_pixels: Grab):
    view.set_series(ct_series)
    view.set_series(None)
    assert view.window is None and view.index == 0 and view.image_rect().isNull()
    assert view.overlay_text() == ("", "")
    pixels = grab_pixels(view)
    assert pixels.max() < 140, "only the dim 'No series' hint on black"


def test_a_session_that_ended_empties_the_view_with_the_vault_message(
        qtbot: QtBot, view: ImageView, vault: Vault, ct_datasets: list[Dataset],
        fresh_user: tuple[str, str, str], grab_pixels: Grab):
    name, password, secret = fresh_user
    _, reader = vault.accounts.login(name, password, totp.current_code(secret))
    view.set_series(vault.reading.open_series(reader, ct_datasets[0].SeriesInstanceUID))
    vault.accounts.logout(reader)

    with qtbot.waitSignal(view.failed, timeout=1000) as failed:
        wheel(view, -1)  # the next image must be read from the vault, which refuses

    with pytest.raises(CustodianError) as refused:
        vault.reading.open_series(reader, ct_datasets[0].SeriesInstanceUID)
    assert failed.args == [str(refused.value)]
    assert view.series is None and view.window is None and view.problem == str(refused.value)
    pixels = grab_pixels(view)
    assert not (pixels == 255).all(axis=2).any(), "no image left on screen (the phantom's bone is white)"


def test_set_index_and_set_window(view: ImageView, ct_series: SeriesImages, ct_datasets: list[Dataset],
                                  grab_pixels: Grab):
    ordered = stack(ct_series, ct_datasets)
    view.set_series(ct_series)
    view.set_index(99)
    assert view.index == 9
    view.set_index(-3)
    assert view.index == 0
    view.set_index(4)
    view.set_window(Window(1000, 2))  # a bone threshold: everything below 1000 HU black
    assert view.overlay_text()[0].endswith("Im 5/10") and view.overlay_text()[1] == "W:2 L:1000"
    assert_shows(view, grab_pixels, reference(ordered[4], 1000, 2))
