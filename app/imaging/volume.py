"""A series as one regular volume of modality values, for MPR, MIP and volume rendering.

The volume is decoded from the vault straight into one preallocated array (int16 when the
modality values are whole numbers that fit, as CT Hounsfield units do, else float32), so the
peak memory is the volume plus the few slices being decoded: no plaintext file, no second copy.
Index order is (slice, row, column) with slices running along the slice normal (for an axial CT:
feet to head), so the volume's axes are the patient axes of the first image's orientation.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.series import SeriesImages

PLANES = ("axial", "coronal", "sagittal")  # the orthogonal planes a volume is reformatted in
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

    def orientation(self, plane: str, tilt: float = 0.0) -> tuple[float, ...]:
        """Image Orientation (Patient) of a reformatted plane as the MPR shows it (for letters);
        ``tilt``: the axial plane turned that many degrees about the left-right axis."""
        down = -self.normal  # coronal and sagittal put the head (the last slice) at the top
        a = math.radians(tilt)
        rows_cols = {"axial": (self.row, math.cos(a) * self.col + math.sin(a) * self.normal),
                     "coronal": (self.row, down), "sagittal": (self.col, down)}[plane]
        return tuple(float(v) for v in (*rows_cols[0], *rows_cols[1]))


@dataclass(frozen=True)
class VolumePlan:
    """What a series' geometry says its volume will be, checked before any pixel is decoded."""

    count: int  # slices
    rows: int
    columns: int
    integral: bool  # whole modality values (int16 first), else float32
    spacing: tuple[float, float, float]
    origin: np.ndarray
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    window: Window
    unit: str


def plan_volume(series: SeriesImages) -> VolumePlan:
    """The volume ``series`` makes, or a plain refusal when its slices do not form one. Quick: it
    reads the index's geometry and decodes one slice (for the default window)."""
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
    integral = all(float(i.slope).is_integer() and float(i.intercept).is_integer() for i in infos)
    return VolumePlan(len(planes), infos[0].rows, infos[0].columns, integral,
                      (step, first.spacing[0], first.spacing[1]), planes[-1].origin.copy(),
                      first.row.copy(), first.col.copy(), first.normal.copy(),
                      series.default_window(len(series) // 2), "HU" if series.modality == "CT" else "")


Progress = Callable[[int], bool]  # slices decoded so far -> whether to go on


def fill_volume(series: SeriesImages, plan: VolumePlan, threads: int = 2,
                progress: Progress | None = None) -> Volume:
    """Decode ``series`` into the volume ``plan`` describes. ``progress`` hears of each slice
    (from the decoding threads) and stops the work by returning False (a CustodianError then)."""
    count, rows, cols = plan.count, plan.rows, plan.columns
    data = np.empty((count, rows, cols), np.int16 if plan.integral else np.float32)
    done = itertools.count(1)
    stopped = threading.Event()

    def fill(k: int) -> bool:
        """Slice k of the volume from display index count-1-k; False if int16 cannot hold it."""
        if stopped.is_set():
            return True
        values = series.values(count - 1 - k, keep=False)
        if data.dtype == np.int16 and (values.min() < _INT16.min or values.max() > _INT16.max
                                       # a per-frame rescale (enhanced images) the index cannot see
                                       or (values.dtype.kind == "f" and not np.array_equal(values,
                                                                                           np.rint(values)))):
            return False
        data[k] = values
        if progress is not None and not progress(next(done)):
            stopped.set()
        return True

    with series.whole():
        with ThreadPoolExecutor(threads) as pool:
            fitted = all(pool.map(fill, range(count)))
        if not fitted and not stopped.is_set():  # rare: whole values beyond int16, kept exactly in float32
            data = np.empty((count, rows, cols), np.float32)
            done = itertools.count(1)
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fill, range(count)))
    if stopped.is_set():
        raise CustodianError("Building the volume was stopped.")
    return Volume(data, plan.spacing, plan.origin, plan.row, plan.col, plan.normal, plan.window, plan.unit)


def build_volume(series: SeriesImages, threads: int = 2) -> Volume:
    """The series' slices as one volume; refused (plainly) when they do not form one."""
    return fill_volume(series, plan_volume(series), threads)


def coarser(volume: Volume, voxels: int) -> Volume:
    """``volume`` averaged over f × f blocks of its slices, with the least f that leaves at most
    ``voxels`` (itself when it holds no more): a volume rendering of a few hundred screen pixels
    needs no more, and its CPU ray caster prepares a quarter of the voxels four times sooner."""
    slices, rows, cols = volume.shape
    f = 1
    while slices * (rows // f) * (cols // f) > voxels and min(rows, cols) // (f + 1) >= 2:
        f += 1
    if f == 1:
        return volume
    rows, cols = rows // f * f, cols // f * f
    total = np.zeros((slices, rows // f, cols // f), np.float32)  # (exact for int16 sums)
    for i, j in itertools.product(range(f), repeat=2):  # strided adds: faster than numpy's mean
        total += volume.data[:, i:rows:f, j:cols:f]
    mean = total / (f * f)
    data = (np.rint(mean) if volume.data.dtype.kind == "i" else mean).astype(volume.data.dtype)
    dz, dy, dx = volume.spacing
    return replace(volume, data=data, spacing=(dz, dy * f, dx * f))


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
