"""What a viewport shows besides the stored values: smoothing when scaled, the corner text, its
outline and layout, and the reason an image cannot be shown, all checked on the grabbed pixels."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41
from PySide6.QtCore import QRect
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.series import SeriesImages
from app.ui.image_view import ImageView
from app.ui.view_painting import OVERLAY_COLOUR, PROBLEM_COLOUR
from tests.imaging.frames import series_of

Grab = Callable[[QWidget], np.ndarray]
SIZE = 64


def ct_slice(fill: int | None = None, **attributes: object) -> Dataset:
    """One 64×64 CT slice of the phantom (or every pixel ``fill``), with ``attributes`` set."""
    (ds,) = ct_study(Patient("P9", "Test^Display"), slices=1, size=SIZE)
    if fill is not None:
        ds.PixelData = np.full((SIZE, SIZE), fill, np.int16).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def make_view(qtbot: QtBot) -> Callable[[int, int], ImageView]:
    def make(width: int, height: int) -> ImageView:
        view = ImageView()
        qtbot.addWidget(view)
        view.resize(width, height)
        view.show()
        qtbot.waitExposed(view)
        return view

    return make


def two_blocks() -> SeriesImages:
    """A 64×64 image, its left half black and its right half white at the stored window."""
    pixels = np.full((SIZE, SIZE), -1000 + 1024, np.int16)
    pixels[:, SIZE // 2:] = 1000 + 1024
    return series_of(to_bytes(ct_slice(PixelData=pixels.tobytes())))


def test_magnified_images_are_smooth_unless_turned_off_and_exact_at_one_to_one(
        make_view: Callable[[int, int], ImageView], grab_pixels: Grab):
    view = make_view(512, 512)
    view.set_annotations(False)
    view.set_series(two_blocks())
    assert view.smooth and view.zoom == 8

    row = grab_pixels(view)[256, :, 0].astype(int)  # across the boundary between the blocks
    between = sorted({int(v) for v in row} - {0, 255})
    assert len(between) >= 5, f"a smooth ramp between the blocks, not a step: {between}"
    assert row[:200].max() == 0 and row[312:].min() == 255, "away from the boundary the values stay"

    view.set_smooth(False)
    assert set(grab_pixels(view)[256, :, 0].tolist()) == {0, 255}, "blocks: only the two values"

    view.set_smooth(True)
    view.actual_pixels()
    one_to_one = grab_pixels(view)
    area = view.image_rect()
    shown = one_to_one[area.top(): area.bottom() + 1, area.left(): area.right() + 1, 0]
    assert area.size().toTuple() == (SIZE, SIZE)
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[:, SIZE // 2:] = 255
    assert (shown == expected).all(), "at 1:1 every screen pixel is the rendered value itself"


def test_corner_text_gives_zoom_slice_location_and_thickness(make_view: Callable[[int, int], ImageView]):
    view = make_view(256, 256)
    ds = ct_slice(SliceThickness=1.25, ImagePositionPatient=[-175, -175, -37.5])
    view.set_series(series_of(to_bytes(ds)))

    left, right = view.overlay_text()
    assert left.splitlines() == ["Zoom 400%", "Loc -37.5 mm", "Thk 1.25 mm", "Im 1/1"]
    assert right == "W:400 L:40"
    view.set_zoom(6.0)
    assert view.overlay_text()[0].splitlines()[0] == "Zoom 600%"

    del ds.SliceThickness, ds.ImagePositionPatient  # neither known: neither said
    view.set_series(series_of(to_bytes(ds)))
    assert view.overlay_text()[0].splitlines() == ["Zoom 400%", "Im 1/1"]


def overlay_coloured(pixels: np.ndarray) -> np.ndarray:
    colour = np.array([OVERLAY_COLOUR.red(), OVERLAY_COLOUR.green(), OVERLAY_COLOUR.blue()])
    return np.abs(pixels.astype(int) - colour).max(axis=2) <= 30


def test_text_is_outlined_so_it_reads_on_a_white_image(make_view: Callable[[int, int], ImageView],
                                                       grab_pixels: Grab):
    view = make_view(256, 256)
    view.set_series(series_of(to_bytes(ct_slice(fill=3000))))  # bone everywhere: white at 40/400
    view.set_corner_text(["Test Display", "ID P9"], ["2026-03-15", "CT CHEST"])
    pixels = grab_pixels(view)
    assert (pixels[128, 128] == 255).all(), "the image is white"

    text = overlay_coloured(pixels)
    white = (pixels > 240).all(axis=2)
    near_white = np.zeros_like(white)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_white |= np.roll(np.roll(white, dy, axis=0), dx, axis=1)
    for name in ("top left", "top right", "bottom left", "bottom right", "left", "top"):
        box = view.annotation_boxes[name]
        inside = np.zeros_like(text)
        inside[box.top(): box.bottom() + 1, box.left(): box.right() + 1] = True
        assert (text & inside).sum() > 10, f"the {name} text is drawn"
        assert not (text & inside & near_white).any(), f"the {name} text touches the white image"


@pytest.mark.parametrize("size", [(256, 256), (512, 512), (220, 320), (420, 260), (120, 300), (240, 250)])
def test_annotations_never_cover_each_other(make_view: Callable[[int, int], ImageView], grab_pixels: Grab,
                                            size: tuple[int, int]):
    view = make_view(*size)
    view.set_series(series_of(to_bytes(ct_slice(fill=3000))))
    view.set_corner_text(["Test Display", "ID P9", "1960-01-01 O"],
                         ["2026-03-15", "CT CHEST", "Acc A1", "Se 1 Axial 2.5 mm"])
    view.set_annotations(False)
    plain = grab_pixels(view).astype(int)
    view.set_annotations(True)
    marked = grab_pixels(view).astype(int)

    boxes = view.annotation_boxes
    assert {"top left", "top right", "bottom left", "bottom right", "left", "right", "top",
            "bottom"} <= set(boxes)
    if size[1] >= 256:
        assert {"scale bar", "scale label"} <= set(boxes), "room for the scale bar on the right edge"
    overlapping = [(a, b) for (a, box_a), (b, box_b) in combinations(boxes.items(), 2)
                   if box_a.intersects(box_b)]
    assert overlapping == []
    covered = np.zeros(marked.shape[:2], bool)
    for box in boxes.values():
        covered[max(box.top(), 0): box.bottom() + 1, max(box.left(), 0): box.right() + 1] = True
    changed = np.abs(marked - plain).max(axis=2) > 30
    assert changed.sum() > 200 and not (changed & ~covered).any(), "everything drawn is inside its box"


def test_the_right_letter_and_the_scale_bar_are_apart_in_a_reading_room_viewport(
        make_view: Callable[[int, int], ImageView]):
    view = make_view(700, 700)  # the single viewport of the reading window
    view.set_series(series_of(to_bytes(ct_slice())))
    view.grab()
    boxes = view.annotation_boxes
    right, bar, label = boxes["right"], boxes["scale bar"], boxes["scale label"]
    assert not right.intersects(bar) and not right.intersects(label) and not bar.intersects(label)
    assert bar.height() > 100, "a long bar still fits beside the letter"


def video_slice() -> bytes:
    """A slice whose pixels are an H.264 stream: well formed, but nothing here decodes video."""
    ds = ct_slice()
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01\x67" + bytes(64)])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def test_an_image_that_cannot_be_shown_says_why_in_the_viewport(
        make_view: Callable[[int, int], ImageView], grab_pixels: Grab):
    view = make_view(300, 300)
    failures: list[str] = []
    view.failed.connect(failures.append)

    view.set_series(series_of(video_slice()))

    assert failures == [view.problem]
    assert view.problem == ("This image could not be decoded: no decoder on this workstation reads its "
                            "compression (MPEG-4 AVC/H.264 High Profile / Level 4.1).")
    pixels = grab_pixels(view).astype(int)
    colour = np.array([PROBLEM_COLOUR.red(), PROBLEM_COLOUR.green(), PROBLEM_COLOUR.blue()])
    assert (np.abs(pixels - colour).max(axis=2) <= 40).sum() > 50, "the reason is written in the view"
    assert view.annotation_boxes == {} and view.image_rect() == QRect()
    view.set_series(series_of(to_bytes(ct_slice())))
    assert view.problem == "" and view.image_rect() == QRect(0, 0, 300, 300)
