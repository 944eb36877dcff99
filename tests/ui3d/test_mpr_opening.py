"""Ctrl+M on a 300-slice CT in the real window (Xvfb, Mesa): progress at once, the three planes
within two seconds (timed by the application's own trace), the volume rendering after them;
labelled panes that redraw on resize and close with Esc and Ctrl+W."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app import trace
from tests.ui3d.panes import agreement, run_under_xvfb

SLICES = 300
PLANES = ("axial", "coronal", "sagittal")


@dataclass
class Opening:
    saved: dict[str, np.ndarray]
    moments: list[trace.Moment]

    def since_ctrl_m(self, event: str) -> float:
        asked = trace.first(self.moments, "mpr.requested")
        assert asked is not None
        moment = trace.first(self.moments, event, after=asked.t)
        assert moment is not None, f"{event} was marked"
        return moment.t - asked.t


@pytest.fixture(scope="module")
def opening(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opening]:
    folder = tmp_path_factory.mktemp("opening")
    out, timeline = folder / "opening.npz", folder / "trace.jsonl"
    run_under_xvfb(["tests.ui3d.opening", str(out), str(SLICES)], timeout=600,
                   extra={trace.VARIABLE: str(timeline)})
    with np.load(out) as data:
        yield Opening(dict(data), trace.read(Path(timeline)))


def test_progress_shows_at_once_and_the_planes_within_two_seconds(opening: Opening) -> None:
    assert opening.saved["progress_at_once"][0], "the progress bar is up when Ctrl+M returns"
    assert opening.since_ctrl_m("mpr.progress") < 0.5
    assert opening.since_ctrl_m("mpr.planes") <= 2.0


def test_the_volume_rendering_comes_after_the_planes(opening: Opening) -> None:
    assert opening.since_ctrl_m("mpr.render") > opening.since_ctrl_m("mpr.planes")


@pytest.mark.parametrize("tag", ["shown", "resized"])
@pytest.mark.parametrize("plane", PLANES)
def test_the_planes_show_the_anatomy(opening: Opening, tag: str, plane: str) -> None:
    shown, expected = opening.saved[f"{tag}_{plane}"], opening.saved[f"{tag}_{plane}_reference"]
    _, counts = np.unique(expected, return_counts=True)
    assert (counts > 0.05 * expected.size).sum() >= 2, "air and body, at least"
    assert agreement(shown, expected, opening.saved[f"{tag}_{plane}_placement"]) > 0.95


def test_a_resize_redraws_the_planes_to_the_new_size(opening: Opening) -> None:
    for plane in PLANES:
        before, after = opening.saved[f"shown_{plane}"], opening.saved[f"resized_{plane}"]
        assert after.shape[1] < before.shape[1]
        # screen pixels per image pixel: fewer in the smaller pane
        assert opening.saved[f"resized_{plane}_placement"][2] > opening.saved[f"shown_{plane}_placement"][2]


def test_the_panes_are_labelled_with_orientation_position_and_window(opening: Opening) -> None:
    texts = {plane: dict(opening.saved[f"shown_{plane}_texts"]) for plane in PLANES}
    assert [texts[p]["title"] for p in PLANES] == ["Axial", "Coronal", "Sagittal"]
    edges = {p: tuple(texts[p][e] for e in ("left", "right", "top", "bottom")) for p in PLANES}
    assert edges == {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "H", "F"),
                     "sagittal": ("A", "P", "H", "F")}
    assert texts["axial"]["position"] == f"{SLICES // 2 + 1}/{SLICES}  -372.5 mm"
    assert texts["coronal"]["position"].startswith("257/512  ")
    assert {texts[p]["window"] for p in PLANES} == {"W:400 L:40"}
    for plane in PLANES:  # and on screen: text in the overlay colour in each corner and at each edge
        shown = opening.saved[f"shown_{plane}"].astype(int)
        r, g, b = shown[..., 0], shown[..., 1], shown[..., 2]
        yellow = (r > 150) & (g > 0.8 * r) & (b < 0.75 * g)  # not the cursor lines' orange
        rows, cols = yellow.shape
        top, middle, bottom = slice(0, 30), slice(rows // 2 - 15, rows // 2 + 15), slice(rows - 30, rows)
        left, centre, right = slice(0, 120), slice(cols // 2 - 15, cols // 2 + 15), slice(cols - 120, cols)
        for region in ((top, left), (bottom, left), (bottom, right), (top, centre), (bottom, centre),
                       (middle, slice(0, 30)), (middle, slice(cols - 30, cols))):
            assert yellow[region].sum() > 5, (plane, region)


def test_esc_and_ctrl_w_close_the_window(opening: Opening) -> None:
    assert opening.saved["esc_closes"][0] and opening.saved["ctrl_w_closes"][0]
