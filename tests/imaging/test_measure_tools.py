"""The geometry behind the measuring tools, without a screen: freehand areas and masks, Cobb angles,
ROI statistics in HU, the pixel probe, editing shapes and placing labels clear of each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.imaging.label_layout import Box, place_labels
from app.imaging.measure import (
    Kind,
    Measurement,
    cobb_angle,
    label,
    polygon_area,
    polygon_mask,
    probe,
    roi_stats,
)
from app.imaging.presentation import Presentation
from app.imaging.shapes import distance_to_polyline, edited, handles, moved, nearest, outline

SQUARE = ((10.0, 10.0), (30.0, 10.0), (30.0, 30.0), (10.0, 30.0))


def test_freehand_area_of_known_polygons() -> None:
    assert polygon_area(SQUARE, None) == pytest.approx(400.0)
    assert polygon_area(SQUARE[::-1], (0.5, 2.0)) == pytest.approx(400.0)  # either way round; 2 × 0.5 mm
    triangle = ((0.0, 0.0), (40.0, 0.0), (0.0, 30.0))
    assert polygon_area(triangle, (0.7, 0.7)) == pytest.approx(600.0 * 0.49)
    text = label(Measurement(Kind.FREEHAND, "1.2", 0, triangle), None, (0.7, 0.7), "HU")
    assert text == f"Area {600 * 0.49:.1f} mm²"


def test_polygon_mask_takes_the_pixels_whose_centres_are_inside() -> None:
    mask = polygon_mask((40, 40), ((9.5, 9.5), (19.5, 9.5), (19.5, 19.5), (9.5, 19.5)))
    assert mask.sum() == 100 and mask[10:20, 10:20].all()
    diamond = polygon_mask((40, 40), ((20, 5), (35, 20), (20, 35), (5, 20)))
    assert diamond[20, 20] and not diamond[6, 6] and diamond.sum() == pytest.approx(2 * 15 * 15, rel=0.08)
    assert not polygon_mask((10, 10), ((50, 50), (60, 50), (60, 60))).any()  # outside the image


def test_cobb_angle_of_known_lines() -> None:
    def line(degrees: float, y: float) -> tuple[tuple[float, float], tuple[float, float]]:
        t = math.radians(degrees)
        return (50 - 20 * math.cos(t), y - 20 * math.sin(t)), (50 + 20 * math.cos(t), y + 20 * math.sin(t))

    assert cobb_angle(line(15, 20), line(-15, 80), (1, 1)) == pytest.approx(30.0)
    upper = line(15, 20)
    assert cobb_angle(upper[::-1], line(-15, 80), (1, 1)) == pytest.approx(30.0)  # drawn either way
    assert cobb_angle(line(50, 20), line(-50, 80), (1, 1)) == pytest.approx(100.0)  # beyond 90°
    assert cobb_angle(line(10, 20), line(10, 80), (1, 1)) == pytest.approx(0.0)
    m = Measurement(Kind.COBB, "1.2", 0, (*line(15, 20), *line(-15, 80)))
    assert label(m, None, (1, 1), "HU") == "Cobb 30.0°"
    with pytest.raises(ValueError, match="cobb needs 4 points"):
        Measurement(Kind.COBB, "1.2", 0, line(15, 20))


def test_roi_statistics_in_hu_of_a_rescaled_array() -> None:
    stored = np.full((50, 50), 1024, np.int16)  # water, stored with intercept -1024
    stored[20:30, 20:30] = 2024  # bone: 1000 HU
    stored[20:30, 25:30] = 1024 + 40  # and soft tissue: 40 HU
    hu = Presentation.linear("MONOCHROME2", 1.0, -1024.0, None).modality(stored)
    stats = roi_stats(Kind.RECTANGLE, hu, ((20, 20), (29, 29)), (0.5, 0.5), "HU")
    assert (stats.pixels, stats.minimum, stats.maximum) == (100, 40.0, 1000.0)
    assert stats.mean == pytest.approx(520.0) and stats.sd == pytest.approx(480.0)
    assert stats.area == pytest.approx(9 * 9 * 0.25)
    rect = Measurement(Kind.RECTANGLE, "1.2", 0, ((20, 20), (29, 29)))
    assert label(rect, hu, (0.5, 0.5), "HU") == ("Mean 520.0 HU  SD 480.0 HU\nMin 40.0 HU  Max 1000.0 HU\n"
                                                 "Area 20.2 mm²")
    outline_ = ((19.5, 19.5), (24.5, 19.5), (24.5, 29.5), (19.5, 29.5))  # the bone half only
    freehand = roi_stats(Kind.FREEHAND, hu, outline_, (0.5, 0.5), "HU")
    assert (freehand.pixels, freehand.mean, freehand.sd) == (50, 1000.0, 0.0)
    assert freehand.area == pytest.approx(50 * 0.25)


def test_probe_reads_the_stored_value_in_its_unit() -> None:
    hu = np.arange(12, dtype=np.float32).reshape(3, 4) * 10 - 1000
    assert probe(hu, (2.2, 1.8), "HU") == "(2, 2)  -900.0 HU"
    assert probe(hu, (5, 0), "HU") == ""  # off the image
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[1, 0] = (255, 128, 0)
    assert probe(rgb, (0, 1), "") == "(0, 1)  RGB 255 128 0"


def test_editing_a_box_keeps_the_opposite_corner_and_moving_keeps_the_shape() -> None:
    box = ((10.0, 10.0), (20.0, 30.0))
    assert handles(Kind.RECTANGLE, box) == [(10, 10), (20, 10), (20, 30), (10, 30)]
    assert edited(Kind.RECTANGLE, box, 1, (25.0, 5.0)) == ((10, 30), (25, 5))  # top right dragged
    assert edited(Kind.DISTANCE, box, 0, (0.0, 0.0)) == ((0, 0), (20, 30))
    assert moved(box, 2, -1) == ((12, 9), (22, 29))
    assert handles(Kind.FREEHAND, SQUARE) == []  # moved whole, never point by point
    ring = outline(Kind.ELLIPSE, box)[0]
    assert all(math.isclose(((x - 15) / 5) ** 2 + ((y - 20) / 10) ** 2, 1) for x, y in ring)
    assert distance_to_polyline((15, 12), outline(Kind.RECTANGLE, box)[0]) == pytest.approx(2)
    assert nearest((11, 11), handles(Kind.RECTANGLE, box), 2) == 0
    assert nearest((15, 20), handles(Kind.RECTANGLE, box), 2) is None


def test_labels_are_placed_clear_of_each_other_and_of_the_annotations() -> None:
    area = Box(0, 0, 300, 300)
    scale_bar = Box(280, 100, 20, 100)
    corner = Box(0, 260, 120, 40)
    # Five labels hanging from the same point, next to the scale bar.
    boxes = place_labels([((260.0, 150.0), (60.0, 30.0))] * 5, [scale_bar, corner], area)
    for i, a in enumerate(boxes):
        assert a.inside(area) and not a.intersects(scale_bar) and not a.intersects(corner)
        assert all(not a.intersects(b) for b in boxes[i + 1:])
    # The first goes where a reader expects it: right below its anchor, when free.
    (free,) = place_labels([((50.0, 50.0), (40.0, 12.0))], [], area)
    assert (free.left, free.top) == (60.0, 55.0)
    # A label hanging from near the edge is moved into the view rather than cut off.
    (edge,) = place_labels([((290.0, 100.0), (120.0, 40.0))], [], area)
    assert edge.inside(area) and edge.right == 300.0
    # With no room at all it still goes somewhere in the view, covering as little as it can.
    (crowded,) = place_labels([((10.0, 10.0), (280.0, 280.0))], [Box(0, 0, 300, 300)], area)
    assert crowded.width == 280.0
