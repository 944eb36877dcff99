"""Reformatting a volume with VTK (no Qt): orthogonal and oblique planes, thick slabs.

VTK's vtkImageReslice does the resampling and the slab reduction (maximum, minimum, mean), in
the volume's own coordinates (mm from voxel 0, axes along the volume's index axes). The images
come back as numpy arrays in display order (row 0 at the top), so the same window function as
the 2D viewer turns them into grey levels, and tests compare them with plain numpy reformats.
"""

from __future__ import annotations

import math

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonCore import VTK_FLOAT, VTK_SHORT
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkImagingCore import vtkImageReslice

from app.imaging.volume import SLABS, Volume, slab_slices, slab_start

PLANES = ("axial", "coronal", "sagittal")


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
