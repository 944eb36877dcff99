"""A series as one regular volume of modality values, for MPR, MIP and volume rendering.

The volume is decoded from the vault straight into one preallocated array (int16 when the
modality values are whole numbers that fit, as CT Hounsfield units do, else float32), so the
peak memory is the volume plus the few slices being decoded: no plaintext file, no second copy.
Index order is (slice, row, column) with slices running along the slice normal (for an axial CT:
feet to head), so the volume's axes are the patient axes of the first image's orientation.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.series import SeriesImages

SPACING_TOLERANCE = 0.01  # relative spread of slice gaps still read as one regular volume
_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # (slices, rows, columns) modality values
    spacing: tuple[float, float, float]  # mm between slices, rows, columns
    origin: np.ndarray  # patient position of voxel (0, 0, 0)
    row: np.ndarray  # patient direction of increasing column index
    col: np.ndarray  # patient direction of increasing row index
    normal: np.ndarray  # patient direction of increasing slice index
    window: Window  # the series' default window
    unit: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape

    def orientation(self, plane: str) -> tuple[float, ...]:
        """Image Orientation (Patient) of a reformatted plane as the MPR shows it (for letters)."""
        down = -self.normal  # coronal and sagittal put the head (the last slice) at the top
        rows_cols = {"axial": (self.row, self.col), "coronal": (self.row, down),
                     "sagittal": (self.col, down)}[plane]
        return tuple(float(v) for v in (*rows_cols[0], *rows_cols[1]))


def build_volume(series: SeriesImages, threads: int = 2) -> Volume:
    """The series' slices as one volume; refused (plainly) when they do not form one."""
    found = [series.plane(i) for i in range(len(series))]
    planes = [p for p in found if p is not None]
    infos = series.instances
    if len(planes) < 2 or len(planes) < len(found):
        raise CustodianError("3D needs a series of at least two slices with position and orientation "
                             "(single-frame slices, or an enhanced multi-frame image with per-frame "
                             "positions); this series has none.")
    first = planes[0]
    shapes = {(i.rows, i.columns, i.samples) for i in infos}
    if len(shapes) != 1 or infos[0].samples != 1:
        raise CustodianError("3D needs slices of one size in grey scale; this series mixes sizes or is "
                             "in colour.")
    if any(np.linalg.norm(np.cross(p.normal, first.normal)) > 1e-3 for p in planes):
        raise CustodianError("The slices of this series are not parallel; it cannot be shown in 3D.")
    # The series lists slices head first (descending along the normal); the volume ascends.
    heights = np.array([float(p.origin @ first.normal) for p in planes])[::-1]
    gaps = np.diff(heights)
    step = float(np.median(gaps))
    if step <= 0 or np.abs(gaps - step).max() > SPACING_TOLERANCE * step:
        raise CustodianError("The slices of this series are not evenly spaced; 3D needs a regular volume.")
    rows, cols = infos[0].rows, infos[0].columns
    count = len(planes)
    integral = all(float(i.slope).is_integer() and float(i.intercept).is_integer() for i in infos)
    data = np.empty((count, rows, cols), np.int16 if integral else np.float32)

    def fill(k: int) -> bool:
        """Slice k of the volume from display index count-1-k; False if int16 cannot hold it."""
        values = series.values(count - 1 - k, keep=False)
        if data.dtype == np.int16 and (values.min() < _INT16.min or values.max() > _INT16.max
                                       # a per-frame rescale (enhanced images) the index cannot see
                                       or (values.dtype.kind == "f" and not np.array_equal(values,
                                                                                           np.rint(values)))):
            return False
        data[k] = values
        return True

    with ThreadPoolExecutor(threads) as pool:
        fitted = all(pool.map(fill, range(count)))
    if not fitted:  # rare: whole values beyond int16, kept exactly in float32 instead
        data = np.empty((count, rows, cols), np.float32)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, range(count)))
    last = planes[-1]
    return Volume(data, (step, first.spacing[0], first.spacing[1]), last.origin.copy(),
                  first.row.copy(), first.col.copy(), first.normal.copy(),
                  series.default_window(len(series) // 2),
                  "HU" if series.modality == "CT" else "")


SLABS = ("mip", "minip", "mean")


def slab_slices(thickness: int, extent: int) -> int:
    """Slabs are centred on the reader's slice, so they hold an odd number of slices (≤ extent)."""
    thickness = max(1, min(thickness, extent))
    return thickness if thickness % 2 else max(1, thickness - 1 if thickness == extent else thickness + 1)


def slab_start(index: int, thickness: int, extent: int) -> int:
    """The first slice of a slab around ``index``, moved inward so it stays inside the volume."""
    return max(0, min(index - (thickness - 1) // 2, extent - thickness))


def reference_slice(volume: Volume, plane: str, index: int, thickness: int = 1,
                    mode: str = "mip") -> np.ndarray:
    """The plain numpy reformat the VTK path is checked against (whole voxels, no interpolation).

    Axial images show rows × columns; coronal and sagittal show the head at the top. A slab of
    ``thickness`` voxels around ``index`` (see :func:`slab_start`) is reduced by its maximum,
    minimum or mean.
    """
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    thickness = slab_slices(thickness, volume.data.shape[axis])
    low = slab_start(index, thickness, volume.data.shape[axis])
    slab = np.take(volume.data, range(low, low + thickness), axis=axis).astype(np.float32)
    reducers: dict[str, Callable[..., np.ndarray]] = {"mip": np.max, "minip": np.min, "mean": np.mean}
    reduce = reducers[mode]
    image = reduce(slab, axis=axis)
    return image if plane == "axial" else image[::-1]
