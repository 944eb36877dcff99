"""Reformatting a volume with VTK (no Qt): orthogonal and oblique planes, thick slabs, and where
the reader is in the volume.

VTK's vtkImageReslice does the resampling and the slab reduction (maximum, minimum, mean), in
the volume's own coordinates (mm from voxel 0, axes along the volume's index axes), on the CPU
(no graphics needed). The images come back as numpy arrays in display order (row 0 at the top),
so the same window function as the 2D viewer turns them into grey levels, and tests compare them
with plain numpy reformats. :class:`MprState` keeps the three linked planes' cursor, slab and
tilt, and describes what each plane's pane shows (:class:`PlaneView`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonCore import VTK_FLOAT, VTK_SHORT
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkImagingCore import vtkImageReslice

from app.imaging.volume import PLANES, SLABS, Volume, slab_slices, slab_start

# The planes whose cursor lines cross each pane: (the vertical line's, the horizontal line's).
CROSSING = {"axial": ("sagittal", "coronal"), "coronal": ("sagittal", "axial"),
            "sagittal": ("coronal", "axial")}


def as_vtk_image(volume: Volume) -> vtkImageData:
    """The volume as vtkImageData sharing its memory (x = columns, y = rows, z = slices)."""
    slices, rows, cols = volume.shape
    image = vtkImageData()
    image.SetDimensions(cols, rows, slices)
    image.SetSpacing(volume.spacing[2], volume.spacing[1], volume.spacing[0])
    kind = VTK_SHORT if volume.data.dtype == np.int16 else VTK_FLOAT
    flat = np.ascontiguousarray(volume.data).reshape(-1)
    scalars = numpy_to_vtk(flat, deep=False, array_type=kind)
    image.GetPointData().SetScalars(scalars)
    # VTK does not own the numpy buffer: keep it alive with the image. VTK's Python objects take
    # attributes of our own, which its stubs cannot know of.
    image._custodian_keep = flat  # type: ignore[attr-defined]
    return image


class Reslicer:
    """Planes through one volume; keeps the VTK pipeline so each new plane costs one update."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.image = as_vtk_image(volume)
        self._reslice = vtkImageReslice()
        self._reslice.SetInputData(self.image)
        self._reslice.SetOutputDimensionality(2)
        self._reslice.SetBackgroundLevel(float(volume.data.min()))

    def extent(self, plane: str) -> int:
        """How many slices the volume has across ``plane``."""
        slices, rows, cols = self.volume.shape
        return {"axial": slices, "coronal": rows, "sagittal": cols}[plane]

    def slice(self, plane: str, index: int, thickness: int = 1, mode: str = "mip") -> np.ndarray:
        """One orthogonal plane (a slab of ``thickness`` voxels centred on ``index``), whole voxels."""
        if mode not in SLABS:
            raise ValueError(f"Slab mode must be one of {', '.join(SLABS)}, not {mode!r}.")
        slices, rows, cols = self.volume.shape
        dz, dy, dx = self.volume.spacing
        thickness = slab_slices(thickness, self.extent(plane))
        low = slab_start(index, thickness, self.extent(plane))
        at = low + (thickness - 1) / 2  # VTK centres the slab on the plane
        top = (slices - 1) * dz  # coronal and sagittal start at the head (the last slice)
        axes: tuple[tuple[float, ...], ...]
        if plane == "axial":
            axes = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, at * dz))
            size, spacing, across = (cols, rows), (dx, dy), dz
        elif plane == "coronal":
            axes = ((1, 0, 0), (0, 0, -1), (0, 1, 0), (0, at * dy, top))
            size, spacing, across = (cols, slices), (dx, dz), dy
        elif plane == "sagittal":
            axes = ((0, 1, 0), (0, 0, -1), (1, 0, 0), (at * dx, 0, top))
            size, spacing, across = (rows, slices), (dy, dz), dx
        else:
            raise ValueError(f"Plane must be one of {', '.join(PLANES)}, not {plane!r}.")
        return self._run(axes, size, spacing, across, thickness, mode, nearest=True)

    def oblique(self, tilt: float, index: int, thickness: int = 1, mode: str = "mip") -> np.ndarray:
        """An axial plane turned ``tilt`` degrees about the left-right axis through the volume's
        centre, then moved ``index`` slices along its own normal (linear interpolation)."""
        axes, size, spacing = self._oblique_axes(tilt, index)
        return self._run(axes, size, spacing, self.volume.spacing[0], thickness, mode, nearest=False)

    def oblique_point(self, tilt: float, index: int, column: float, row: float) -> tuple[float, float, float]:
        """The voxel (slice, row, column; fractional) that pixel (``column``, ``row``) of
        :meth:`oblique` shows: where a click on the tilted plane points in the volume."""
        (x, down, _normal, corner), _, (dx, step) = self._oblique_axes(tilt, index)
        point = np.asarray(corner) + column * dx * np.asarray(x) + row * step * np.asarray(down)
        dz, dy, dx = self.volume.spacing
        return float(point[2] / dz), float(point[1] / dy), float(point[0] / dx)

    def _oblique_axes(self, tilt: float, index: int) -> tuple[tuple[tuple[float, ...], ...], tuple[int, int],
                                                              tuple[float, float]]:
        """Reslice axes (x, y, normal, origin in mm from voxel 0), image size and pixel spacing."""
        slices, rows, cols = self.volume.shape
        dz, dy, dx = self.volume.spacing
        a = math.radians(tilt)
        down = (0.0, math.cos(a), math.sin(a))
        normal = (0.0, -math.sin(a), math.cos(a))
        centre = np.array([(cols - 1) * dx, (rows - 1) * dy, (slices - 1) * dz]) / 2
        step = min(dx, dy, dz)
        height = math.ceil(math.hypot((rows - 1) * dy, (slices - 1) * dz) / step) + 1
        corner = centre - np.array(down) * (height - 1) * step / 2 - np.array([(cols - 1) * dx / 2, 0, 0])
        corner = corner + np.array(normal) * (index - (slices - 1) / 2) * dz
        return ((1.0, 0.0, 0.0), down, normal, tuple(corner)), (cols, height), (dx, step)

    def _run(self, axes: tuple[tuple[float, ...], ...], size: tuple[int, int],
             spacing: tuple[float, float], across: float, thickness: int, mode: str, *,
             nearest: bool) -> np.ndarray:
        matrix = vtkMatrix4x4()
        x, y, z, origin = (np.asarray(v, float) for v in axes)
        for r in range(3):
            for c, column in enumerate((x, y, z, origin)):
                matrix.SetElement(r, c, float(column[r]))
        reslice = self._reslice
        reslice.SetResliceAxes(matrix)
        reslice.SetOutputSpacing(spacing[0], spacing[1], across)
        reslice.SetOutputOrigin(0.0, 0.0, 0.0)
        reslice.SetOutputExtent(0, size[0] - 1, 0, size[1] - 1, 0, 0)
        if nearest:
            reslice.SetInterpolationModeToNearestNeighbor()
        else:
            reslice.SetInterpolationModeToLinear()
        reslice.SetSlabNumberOfSlices(max(1, thickness))
        {"mip": reslice.SetSlabModeToMax, "minip": reslice.SetSlabModeToMin,
         "mean": reslice.SetSlabModeToMean}[mode]()
        reslice.Update()
        out = reslice.GetOutput()
        return vtk_to_numpy(out.GetPointData().GetScalars()).reshape(size[1], size[0]).astype(
            np.float32, copy=True)


@dataclass(frozen=True)
class PlaneView:
    """What one pane shows: a plane's modality values and where the reader is on it."""

    plane: str
    values: np.ndarray  # modality values, row 0 at the top
    spacing: tuple[float, float]  # mm between columns, between rows
    cursor: tuple[float, float]  # column and row where the other two planes cut this one
    crossing: tuple[str, str]  # the planes cutting it: along the column, along the row
    orientation: tuple[float, ...]  # Image Orientation (Patient) as shown, for the edge letters
    index: int  # the slice across the plane (0-based) and how many there are
    extent: int
    location: float  # mm along the plane's normal in patient coordinates (as Slice Location)
    slab: int  # slices reduced into the image (1: a single slice)
    slab_mode: str  # one of SLABS when slab > 1
    tilt: float  # degrees the axial plane is turned about the left-right axis


class MprState:
    """Three linked planes through one volume: each plane's slice (the cursor), a thick slab for
    all three and an oblique tilt of the axial plane."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.reslicer = Reslicer(volume)
        slices, rows, cols = volume.shape
        self.cursor = {"axial": slices // 2, "coronal": rows // 2, "sagittal": cols // 2}
        self.slab_mode = ""  # "" for a single slice, else one of SLABS
        self.slab_mm = 10.0
        self.tilt = 0.0

    def slab_slices(self, plane: str) -> int:
        if not self.slab_mode:
            return 1
        dz, dy, dx = self.volume.spacing
        across = {"axial": dz, "coronal": dy, "sagittal": dx}[plane]
        return slab_slices(max(1, round(self.slab_mm / across)), self.reslicer.extent(plane))

    def move(self, plane: str, steps: int) -> None:
        self.cursor[plane] = max(0, min(self.cursor[plane] + steps, self.reslicer.extent(plane) - 1))

    def click(self, plane: str, x: float, y: float) -> None:
        """Put the cursor on a point of ``plane``: the other two planes move through it."""
        slices = self.volume.shape[0]
        column, row = round(x), round(y)
        if plane == "axial" and self.tilt:
            # The tilted plane stays where it is (the axial cursor places it); the coronal and
            # sagittal planes move through the clicked point.
            _, at_row, at_column = self.reslicer.oblique_point(self.tilt, self.cursor["axial"], x, y)
            self.cursor["coronal"], self.cursor["sagittal"] = round(at_row), round(at_column)
        elif plane == "axial":
            self.cursor["sagittal"], self.cursor["coronal"] = column, row
        elif plane == "coronal":
            self.cursor["sagittal"], self.cursor["axial"] = column, slices - 1 - row
        elif plane == "sagittal":
            self.cursor["coronal"], self.cursor["axial"] = column, slices - 1 - row
        for name in self.cursor:
            self.cursor[name] = max(0, min(self.cursor[name], self.reslicer.extent(name) - 1))

    def values(self, plane: str) -> np.ndarray:
        """The modality values of ``plane`` as its pane shows them (before the window)."""
        mode = self.slab_mode or "mip"
        if plane == "axial" and self.tilt:
            return self.reslicer.oblique(self.tilt, self.cursor["axial"], self.slab_slices(plane), mode)
        return self.reslicer.slice(plane, self.cursor[plane], self.slab_slices(plane), mode)

    def view(self, plane: str) -> PlaneView:
        volume, c = self.volume, self.cursor
        dz, dy, dx = volume.spacing
        slices = volume.shape[0]
        tilt = self.tilt if plane == "axial" else 0.0
        spacing, cursor = {
            "axial": ((dx, min(dx, dy, dz) if tilt else dy), (c["sagittal"], c["coronal"])),
            "coronal": ((dx, dz), (c["sagittal"], slices - 1 - c["axial"])),
            "sagittal": ((dy, dz), (c["coronal"], slices - 1 - c["axial"])),
        }[plane]
        slab = self.slab_slices(plane)
        return PlaneView(plane, self.values(plane), spacing, cursor, CROSSING[plane],
                         volume.orientation(plane, tilt), c[plane], self.reslicer.extent(plane),
                         self.location(plane), slab, self.slab_mode if slab > 1 else "", tilt)

    def location(self, plane: str) -> float:
        """Where ``plane`` is: its centre's patient coordinate along its normal, in mm."""
        volume = self.volume
        slices, rows, cols = volume.shape
        dz, dy, dx = volume.spacing
        centre = np.array([(cols - 1) * dx, (rows - 1) * dy, (slices - 1) * dz]) / 2  # x, y, z mm
        axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
        a = math.radians(self.tilt if plane == "axial" else 0.0)
        normal = np.zeros(3)
        normal[axis] = 1.0
        if a:  # the oblique plane's normal, as Reslicer._oblique_axes turns it
            normal = np.array([0.0, -math.sin(a), math.cos(a)])
        across = (dx, dy, dz)[axis]
        point = centre + normal * (self.cursor[plane] * across - centre[axis])
        patient = volume.origin + point[0] * volume.row + point[1] * volume.col + point[2] * volume.normal
        patient_normal = normal[0] * volume.row + normal[1] * volume.col + normal[2] * volume.normal
        return float(patient @ patient_normal)
