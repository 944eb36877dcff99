"""The MPR / 3D window under a real X server (Xvfb, Mesa), checked against numpy reformats."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.ui3d.panes import agreement, run_under_xvfb


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("mpr") / "scene.npz"
    run_under_xvfb(["tests.ui3d.scene", str(out)], timeout=240)
    with np.load(out) as data:
        yield dict(data)


@pytest.mark.parametrize("tag", ["start", "clicked", "slab"])
@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_planes_show_the_numpy_reformat(scene: dict[str, np.ndarray], tag: str, plane: str) -> None:
    shown, expected = scene[f"{tag}_{plane}"], scene[f"{tag}_{plane}_reference"]
    assert shown.shape[:2] == expected.shape, "one voxel per screen pixel"
    assert agreement(shown, expected, scene[f"{tag}_{plane}_placement"]) > 0.99


def test_a_click_moves_the_other_planes_through_the_point(scene: dict[str, np.ndarray]) -> None:
    axial, coronal, sagittal = scene["start_cursor"]
    assert (axial, coronal, sagittal) == (20, 70, 70)
    # Column 30, row 5 of the coronal plane: sagittal 30, axial 40 - 1 - 5; coronal unchanged.
    assert scene["clicked_cursor"].tolist() == [34, 70, 30]


def test_a_click_on_the_tilted_plane_moves_the_other_planes_through_the_point(
        scene: dict[str, np.ndarray]) -> None:
    axial, coronal, sagittal = scene["tilted_cursor"]
    _, row, column = scene["tilted_point"]
    assert (coronal, sagittal) == (round(row), round(column)) and sagittal == 50
    assert axial == scene["slab_cursor"][0], "the tilted plane itself stays where it was"
    assert round(row) != 60, "at 30° the point's row is not the pixel's row"


def test_locking_the_reading_window_closes_3d(scene: dict[str, np.ndarray]) -> None:
    shown, gone, nothing_left = scene["lock_closes_3d"]
    assert shown and gone and nothing_left


def test_cursor_lines_are_drawn_where_the_other_planes_cut(scene: dict[str, np.ndarray]) -> None:
    axial = scene["clicked_axial"].astype(int)
    coloured = ~((axial[..., 0] == axial[..., 1]) & (axial[..., 1] == axial[..., 2]))
    assert coloured[:, 30].mean() > 0.9, "the sagittal plane's line at column 30"
    assert coloured[70, :].mean() > 0.9, "the coronal plane's line at row 70"


def test_the_slab_is_a_maximum_over_slices(scene: dict[str, np.ndarray]) -> None:
    single, slab = scene["clicked_axial_reference"], scene["slab_axial_reference"]
    assert (slab.astype(int) >= single.astype(int)).all() and (slab != single).any()


def test_volume_rendering_shows_the_phantom(scene: dict[str, np.ndarray]) -> None:
    bone, mip = scene["render_Bone"].astype(int), scene["render_MIP"].astype(int)
    for image in (bone, mip):
        assert image.sum(axis=2).max() > 300, "something bright is drawn"
        assert (image.sum(axis=2) == 0).mean() > 0.2, "the background stays black"
    assert not np.array_equal(bone, mip)
    assert scene["reslice_ms"][0] < 1000


def test_a_drag_turns_the_volume_and_a_resize_draws_it_again(scene: dict[str, np.ndarray]) -> None:
    turned, mip = scene["render_turned"].astype(int), scene["render_MIP"].astype(int)
    assert turned.shape == mip.shape and (np.abs(turned - mip).sum(axis=2) > 30).mean() > 0.005
    assert scene["render_resized"][0], "a picture of the pane's new size"


def test_closing_lets_the_volume_go(scene: dict[str, np.ndarray]) -> None:
    assert scene["closed_lets_go"].all()
