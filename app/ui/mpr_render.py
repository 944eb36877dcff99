"""Volume rendering into an offscreen VTK window, as numpy pictures (see :mod:`app.ui.mpr_volume`,
whose worker thread makes, uses and closes a :class:`VolumeRenderer`: VTK's objects and its
OpenGL context belong to that one thread).

VTK's CPU ray caster (vtkFixedPointVolumeRayCastMapper) draws the same picture on every
machine; its first picture of a volume costs seconds (gradients for the shading, tables to skip
empty space), the next ones a fraction of a second.
"""

from __future__ import annotations

import numpy as np
from vtkmodules import vtkRenderingOpenGL2, vtkRenderingVolumeOpenGL2  # noqa: F401  (VTK's OpenGL backend)
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction
from vtkmodules.vtkRenderingCore import (
    vtkColorTransferFunction,
    vtkRenderer,
    vtkRenderWindow,
    vtkVolume,
    vtkVolumeProperty,
    vtkWindowToImageFilter,
)
from vtkmodules.vtkRenderingVolume import vtkFixedPointVolumeRayCastMapper

from app.imaging.mpr import as_vtk_image
from app.imaging.volume import Volume

# (modality value, red, green, blue, opacity) control points of a shaded rendering.
ControlPoints = tuple[tuple[float, float, float, float, float], ...]
MIP_POINTS: ControlPoints = ((-1000, 0, 0, 0, 0), (1500, 1, 1, 1, 1))


class VolumeRenderer:
    """One volume, rendered offscreen at a given size from a camera the reader turns and zooms."""

    def __init__(self, volume: Volume) -> None:
        self.window = vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(0, 0, 0)
        self.window.AddRenderer(self.renderer)
        self.mapper = vtkFixedPointVolumeRayCastMapper()
        self.mapper.SetInputData(as_vtk_image(volume))  # its own vtkImageData over the same memory
        self.volume_property = vtkVolumeProperty()
        self.volume_property.SetInterpolationTypeToLinear()
        self.actor = vtkVolume()
        self.actor.SetMapper(self.mapper)
        self.actor.SetProperty(self.volume_property)
        self.renderer.AddVolume(self.actor)
        camera = self.renderer.GetActiveCamera()
        camera.SetViewUp(0, 0, 1)  # the head up
        camera.SetPosition(0, -1, 0)  # seen from the front (anterior is -y in LPS)
        camera.SetFocalPoint(0, 0, 0)
        self.renderer.ResetCamera()
        self._grab = vtkWindowToImageFilter()
        self._grab.SetInput(self.window)
        self._grab.ReadFrontBufferOff()

    def set_points(self, points: ControlPoints, mip: bool) -> None:
        """Colour and opacity along the modality values; ``mip``: the brightest voxel on each ray
        (unshaded) instead of shaded compositing."""
        colour, opacity = vtkColorTransferFunction(), vtkPiecewiseFunction()
        for value, r, g, b, alpha in points:
            colour.AddRGBPoint(value, r, g, b)
            opacity.AddPoint(value, alpha)
        if mip:
            self.mapper.SetBlendModeToMaximumIntensity()
            self.volume_property.ShadeOff()
        else:
            self.mapper.SetBlendModeToComposite()
            self.volume_property.ShadeOn()
        self.volume_property.SetColor(colour)
        self.volume_property.SetScalarOpacity(opacity)

    def move_camera(self, azimuth: float, elevation: float, dolly: float) -> None:
        """Turn the camera about the volume (degrees) and move it closer by ``dolly`` (> 1)."""
        camera = self.renderer.GetActiveCamera()
        camera.Azimuth(azimuth)
        camera.Elevation(elevation)
        camera.OrthogonalizeViewUp()
        camera.Dolly(dolly)
        self.renderer.ResetCameraClippingRange()

    def render(self, size: tuple[int, int]) -> np.ndarray:
        """The picture at ``size`` (width, height): (rows, columns, 3) RGB, row 0 at the top."""
        self.window.SetSize(*size)
        self.window.Render()
        self._grab.Modified()
        self._grab.Update()
        image = self._grab.GetOutput()
        width, height, _ = image.GetDimensions()
        rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(rgb[::-1, :, :3])

    def close(self) -> None:
        """Release the OpenGL context (on the thread that made it)."""
        self.window.Finalize()
