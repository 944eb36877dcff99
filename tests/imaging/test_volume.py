"""Volumes built from the vault, and VTK's reformats against numpy (no display needed)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.mpr import Reslicer
from app.imaging.volume import Volume, build_volume, reference_slice, slab_slices
from tests.conftest import VaultEnv


def test_a_volume_from_the_vault_holds_the_hounsfield_units(env: VaultEnv) -> None:
    datasets = ct_study(Patient("VOL1", "Volume^Vera"), slices=12, size=32)
    env.vault.intake.import_bytes(env.login("tech"),
                                  [(f"v{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
    series = env.vault.reading.open_series(env.login("rad"), datasets[0].SeriesInstanceUID)
    volume = build_volume(series)
    # Slices ascend along the normal: feet first, so the demo's last (lowest) slice comes first.
    expected = np.stack([pydicom.dcmread(pydicom.filebase.DicomBytesIO(to_bytes(ds))).pixel_array
                         for ds in reversed(datasets)]).astype(np.int32) - 1024
    assert volume.data.dtype == np.int16 and (volume.data == expected).all()
    assert volume.spacing == pytest.approx((2.5, 350 / 32, 350 / 32))
    assert np.allclose(volume.origin, datasets[-1].ImagePositionPatient)
    assert volume.window == Window(40, 400) and volume.unit == "HU"
    assert volume.orientation("coronal") == (1, 0, 0, 0, 0, -1)


def test_uneven_or_missing_geometry_is_refused(env: VaultEnv) -> None:
    datasets = ct_study(Patient("VOL2", "Volume^Gap"), slices=5, size=16)
    datasets[2].ImagePositionPatient = [*datasets[2].ImagePositionPatient[:2], -4.0]  # 1 mm off
    env.vault.intake.import_bytes(env.login("tech"),
                                  [(f"g{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
    series = env.vault.reading.open_series(env.login("rad"), datasets[0].SeriesInstanceUID)
    with pytest.raises(CustodianError, match="not evenly spaced"):
        build_volume(series)


@pytest.fixture(scope="module")
def noise() -> Volume:
    data = np.random.default_rng(7).integers(-1000, 2000, (30, 40, 50)).astype(np.int16)
    return Volume(data, (2.5, 0.7, 0.7), np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                  np.array([0, 0, 1.0]), Window(40, 400), "HU")


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize(("thickness", "mode"), [(1, "mip"), (3, "mip"), (4, "minip"), (5, "mean")])
def test_vtk_reformats_equal_numpy(noise: Volume, plane: str, thickness: int, mode: str) -> None:
    reslicer = Reslicer(noise)
    for index in (0, 7, reslicer.extent(plane) - 1):  # the edges too: slabs move inward there
        ours = reslicer.slice(plane, index, thickness, mode)
        theirs = reference_slice(noise, plane, index, thickness, mode)
        assert ours.shape == theirs.shape
        assert np.allclose(ours, theirs, atol=0.51), (plane, index)


def test_slabs_are_odd_and_centred() -> None:
    assert [slab_slices(t, 30) for t in (1, 2, 3, 4, 30, 31)] == [1, 3, 3, 5, 29, 29]


def test_oblique_at_zero_tilt_is_the_axial_plane(noise: Volume) -> None:
    reslicer = Reslicer(noise)
    tilted = reslicer.oblique(0.0, 15)
    rows = noise.shape[1]
    top = (tilted.shape[0] - rows) // 2
    assert np.allclose(tilted[top:top + rows], reference_slice(noise, "axial", 15), atol=1e-3)
    assert not np.allclose(reslicer.oblique(30.0, 15)[top:top + rows], tilted[top:top + rows])


def test_a_pixel_of_the_oblique_plane_names_the_voxel_it_shows() -> None:
    # A volume whose value is a linear function of the voxel: linear interpolation reproduces it
    # exactly, so each oblique pixel's value says which voxel VTK sampled there.
    slices, rows, cols = 30, 40, 50
    z, y, x = np.mgrid[:slices, :rows, :cols]
    data = (z * 40 + y * 3 - x).astype(np.int16)
    volume = Volume(data, (2.5, 0.7, 0.7), np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                    np.array([0, 0, 1.0]), Window(40, 400), "HU")
    reslicer = Reslicer(volume)
    for tilt in (0.0, 30.0, -45.0):
        image = reslicer.oblique(tilt, 15)
        inside = 0
        for row in range(0, image.shape[0], 7):
            for column in range(0, cols, 9):
                at_z, at_y, at_x = reslicer.oblique_point(tilt, 15, column, row)
                if not (0 <= at_z <= slices - 1 and 0 <= at_y <= rows - 1):
                    continue
                inside += 1
                # (VTK rounds to the volume's int16: half a unit; one slice is 40, one row 3)
                assert image[row, column] == pytest.approx(at_z * 40 + at_y * 3 - at_x, abs=0.51)
        assert inside > 20, tilt
