"""The volume loaded in steps for the MPR window (plan, progress, stop), the coarser copy the 3D
view renders, and where the linked planes are (no display needed)."""

from __future__ import annotations

import numpy as np
import pytest

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.mpr import MprState
from app.imaging.pixels import Decoded, FrameInfo, decode_frames
from app.imaging.series import SeriesImages
from app.imaging.volume import Volume, build_volume, coarser, fill_volume, plan_volume
from tests.imaging.frames import info_of

SLICES, SIZE = 24, 32


def _series(decoded: list[str]) -> SeriesImages:
    """The demo CT, noting each instance it decodes in ``decoded``."""
    data = {ds.SOPInstanceUID: to_bytes(ds) for ds in ct_study(Patient("ST1", "State^S"), slices=SLICES,
                                                                size=SIZE)}

    def load(info: FrameInfo) -> Decoded:
        decoded.append(info.sop_uid)
        return decode_frames(info, data[info.sop_uid])

    return SeriesImages([info_of(raw) for raw in data.values()], load, modality="CT")


def test_the_volume_is_planned_then_filled_with_progress() -> None:
    decoded: list[str] = []
    series = _series(decoded)
    plan = plan_volume(series)
    assert (plan.count, plan.rows, plan.columns, plan.integral) == (SLICES, SIZE, SIZE, True)
    assert len(decoded) == 1, "planning decodes one slice, for the default window"
    heard: list[int] = []
    volume = fill_volume(series, plan, progress=lambda done: heard.append(done) is None)
    assert sorted(heard) == list(range(1, SLICES + 1))
    reference = build_volume(series)
    assert np.array_equal(volume.data, reference.data) and volume.spacing == reference.spacing
    assert volume.window == Window(40, 400) and volume.unit == "HU"


def test_progress_that_says_stop_stops_the_decoding() -> None:
    decoded: list[str] = []
    series = _series(decoded)
    plan = plan_volume(series)
    decoded.clear()
    with pytest.raises(CustodianError, match="stopped"):
        fill_volume(series, plan, threads=2, progress=lambda done: done < 3)
    assert len(decoded) < SLICES // 2, "the slices after the stop are not decoded"


def _volume(data: np.ndarray, spacing: tuple[float, float, float] = (2.0, 0.5, 0.5)) -> Volume:
    return Volume(data, spacing, np.array([-10.0, -20.0, -30.0]), np.array([1.0, 0, 0]),
                  np.array([0, 1.0, 0]), np.array([0, 0, 1.0]), Window(40, 400), "HU")


def test_the_coarser_volume_averages_blocks_within_the_voxel_budget() -> None:
    data = np.random.default_rng(3).integers(-1000, 2000, (5, 12, 9)).astype(np.int16)
    volume = _volume(data)
    assert coarser(volume, data.size) is volume
    half = coarser(volume, data.size // 2)  # 2 x 2 blocks hold a quarter: the least that fits
    expected = np.rint(data[:, :12, :8].reshape(5, 6, 2, 4, 2).mean(axis=(2, 4))).astype(np.int16)
    assert half.data.dtype == np.int16 and np.array_equal(half.data, expected)
    assert half.spacing == (2.0, 1.0, 1.0)
    third = coarser(volume, 5 * 4 * 3)
    assert third.shape == (5, 4, 3) and third.spacing == (2.0, 1.5, 1.5)


def test_each_plane_says_where_it_is_and_how_it_is_turned() -> None:
    volume = _volume(np.zeros((10, 20, 30), np.int16))
    state = MprState(volume)
    assert state.cursor == {"axial": 5, "coronal": 10, "sagittal": 15}
    assert state.location("axial") == pytest.approx(-30 + 5 * 2.0)
    assert state.location("coronal") == pytest.approx(-20 + 10 * 0.5)
    assert state.location("sagittal") == pytest.approx(-10 + 15 * 0.5)
    state.tilt = 90.0  # the axial plane turned upright, half a slice (1 mm) ahead of the centre,
    # along its normal (anterior, -y): at y = -20 + 19 * 0.5 / 2 - 1 = -16.25 mm
    assert state.location("axial") == pytest.approx(16.25)
    assert volume.orientation("axial", 90.0) == pytest.approx((1, 0, 0, 0, 0, 1))
    view = state.view("axial")
    assert (view.crossing, view.tilt, view.extent, view.slab) == (("sagittal", "coronal"), 90.0, 10, 1)
    state.slab_mode, state.slab_mm = "mip", 5.0
    assert state.slab_slices("axial") == 3 and state.view("coronal").slab == 11
