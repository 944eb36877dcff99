"""Orientation letters, slice matching, reference lines and measurements, without a screen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.imaging.geometry import Plane, direction_letters, edge_letters, nearest_slice, reference_line
from app.imaging.measure import Kind, Measurement, angle, distance, ellipse_stats, label

AXIAL = (1, 0, 0, 0, 1, 0)
CORONAL = (1, 0, 0, 0, 0, -1)
SAGITTAL = (0, 1, 0, 0, 0, -1)


@pytest.mark.parametrize(("vector", "letters"), [
    ((1, 0, 0), "L"), ((-1, 0, 0), "R"), ((0, 1, 0), "P"), ((0, -1, 0), "A"), ((0, 0, 1), "H"),
    ((0, 0, -1), "F"), ((0.2, -0.7, -0.68), "AF"), ((0.6, 0.1, 0.79), "HL"),
])
def test_direction_letters(vector: tuple[float, ...], letters: str) -> None:
    assert direction_letters(vector) == letters


def test_edges_of_standard_planes_and_after_turning_and_flipping() -> None:
    assert edge_letters(AXIAL) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert edge_letters(CORONAL) == {"left": "R", "right": "L", "top": "H", "bottom": "F"}
    assert edge_letters(SAGITTAL) == {"left": "A", "right": "P", "top": "H", "bottom": "F"}
    # Turned a quarter clockwise, the anterior side that was on top is now on the right.
    assert edge_letters(AXIAL, 90) == {"left": "P", "right": "A", "top": "R", "bottom": "L"}
    assert edge_letters(AXIAL, 180) == {"left": "L", "right": "R", "top": "P", "bottom": "A"}
    assert edge_letters(AXIAL, flip_h=True)["left"] == "L"
    assert edge_letters(AXIAL, flip_v=True)["top"] == "P"
    assert edge_letters(AXIAL, 90, flip_h=True)["right"] == "P"


def _axial(z: float, size: int = 100, spacing: float = 1.0) -> Plane:
    return Plane.of((-size * spacing / 2, -size * spacing / 2, z), AXIAL, (spacing, spacing), size, size)


def test_nearest_slice_by_position_and_with_a_table_offset() -> None:
    current = [_axial(-2.5 * i) for i in range(40)]  # head first, 2.5 mm apart
    prior = [_axial(-5.0 * i + 1.0) for i in range(20)]  # 5 mm apart, shifted 1 mm
    target = current[10]  # z = -25
    assert nearest_slice(target.origin, target.normal, prior) == 5  # z = -24
    assert nearest_slice(target.origin, target.normal, prior, offset=-30.0) == 11  # z = -54


def test_reference_line_of_an_axial_slice_on_a_sagittal_image() -> None:
    # A sagittal image through x = 0: columns run posterior (y), rows run to the feet (-z).
    sagittal = Plane.of((0, -50, 50), SAGITTAL, (1, 1), 100, 100)
    axial = _axial(20.0)
    (x0, y0), (x1, y1) = reference_line(sagittal, axial)
    assert y0 == pytest.approx(30.0) and y1 == pytest.approx(30.0)  # 50 - 20 mm below the top row
    assert sorted((x0, x1)) == pytest.approx([-0.5, 99.5])  # the axial slice spans the whole width
    assert reference_line(_axial(0.0), axial) is None  # parallel slices never cross
    outside = Plane.of((0, -50, 50), SAGITTAL, (1, 1), 10, 100)  # only 10 rows: z 50..41
    assert reference_line(outside, axial) is None


def test_plane_round_trip() -> None:
    plane = Plane.of((-10, 20, 5), CORONAL, (0.5, 2.0), 64, 32)
    point = plane.to_patient(12.0, 7.5)
    assert plane.to_image(point) == pytest.approx((12.0, 7.5))
    assert np.allclose(point, [-10 + 24.0, 20, 5 - 3.75])


def test_distance_and_angle_use_pixel_spacing() -> None:
    assert distance((0, 0), (30, 40), (1.0, 1.0)) == (50.0, "mm")
    assert distance((0, 0), (10, 0), (0.5, 2.0))[0] == pytest.approx(20.0)  # columns 2 mm apart
    assert distance((0, 0), (10, 0), None) == (10.0, "px")
    assert angle((10, 0), (0, 0), (0, 10), (1, 1)) == pytest.approx(90.0)
    # Pixels twice as wide as high: the image's 45° diagonal is 63.4° from the vertical in mm.
    assert angle((0, 10), (0, 0), (10, 10), (1.0, 2.0)) == pytest.approx(math.degrees(math.atan(2)))


def test_ellipse_statistics_on_a_phantom_of_known_values() -> None:
    values = np.zeros((100, 100), np.float32)
    yy, xx = np.mgrid[:100, :100]
    values[np.hypot(yy - 50, xx - 50) < 30] = 1000.0  # a disc of 1000 in zero
    inside = ellipse_stats(values, (40, 40), (60, 60), (0.5, 0.5), "HU")
    assert inside.mean == 1000.0 and inside.sd == 0.0 and inside.unit == "HU"
    assert inside.area == pytest.approx(math.pi * 5 * 5)  # radius 10 px = 5 mm
    straddling = ellipse_stats(values, (0, 40), (40, 60), (1, 1), "HU")
    assert 0 < straddling.mean < 1000 and straddling.sd > 0
    text = label(Measurement(Kind.ELLIPSE, "1.2", 0, ((40, 40), (60, 60))), values, (0.5, 0.5), "HU")
    assert text == "Mean 1000.0 HU  SD 0.0 HU\nMin 1000.0 HU  Max 1000.0 HU\nArea 78.5 mm²"


def test_a_measurement_has_the_points_its_kind_needs() -> None:
    with pytest.raises(ValueError, match="angle needs 3 points"):
        Measurement(Kind.ANGLE, "1.2", 0, ((0, 0), (1, 1)))
