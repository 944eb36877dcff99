"""A presentation state's Displayed Area Selection (PS3.3 C.10.4): which part of the image is shown,
and how big: scaled to fill the viewport, magnified by a ratio, or at true size.

The corners are 1-based pixel indices (column, row) of the image before its rotation and flip; here
they become image coordinates (pixel centres at whole numbers, as in :mod:`app.imaging.measure`).
True size needs the screen's physical pixel size, which a workstation cannot be sure of, so such an
area is scaled to fit and the reader is told (:attr:`DisplayedArea.fitted_instead`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

SCALE_TO_FIT, TRUE_SIZE, MAGNIFY = "SCALE TO FIT", "TRUE SIZE", "MAGNIFY"


@dataclass(frozen=True)
class DisplayedArea:
    sop_uids: tuple[str, ...]  # the images it is for; () for all the state's
    box: tuple[float, float, float, float]  # left, top, right, bottom pixel centres (image coordinates)
    mode: str = SCALE_TO_FIT  # Presentation Size Mode
    magnification: float = 1.0  # screen pixels per image pixel, for MAGNIFY

    @property
    def fitted_instead(self) -> bool:
        """A size the viewport cannot show as asked (true size), scaled to fit instead."""
        return self.mode not in (SCALE_TO_FIT, MAGNIFY)

    @property
    def centre(self) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (left + right) / 2, (top + bottom) / 2

    def whole(self, rows: int, columns: int) -> bool:
        """The whole image scaled to fit: what a viewport shows anyway."""
        return self.mode == SCALE_TO_FIT and self.box == (0.0, 0.0, columns - 1.0, rows - 1.0)

    def zoom(self, aspect: float, rotation: int, width: float, height: float) -> float:
        """Screen pixels per image row that show the area as asked in a ``width`` × ``height`` viewport,
        its pixels ``aspect`` times as wide as high, turned by ``rotation`` degrees."""
        if self.mode == MAGNIFY:
            return self.magnification
        left, top, right, bottom = self.box
        wide, tall = (abs(right - left) + 1) * aspect, abs(bottom - top) + 1
        if rotation % 180:
            wide, tall = tall, wide
        return min(width / wide, height / tall)


def read_areas(ds: Dataset, every: tuple[str, ...]) -> tuple[DisplayedArea, ...]:
    """The Displayed Area Selection items of a state (``every``: all the images it applies to)."""
    areas = []
    for item in ds.get("DisplayedAreaSelectionSequence") or []:
        if "DisplayedAreaTopLeftHandCorner" not in item or "DisplayedAreaBottomRightHandCorner" not in item:
            continue
        (left, top), (right, bottom) = ((float(v) - 1 for v in item.DisplayedAreaTopLeftHandCorner),
                                        (float(v) - 1 for v in item.DisplayedAreaBottomRightHandCorner))
        uids = tuple(str(r.ReferencedSOPInstanceUID) for r in item.get("ReferencedImageSequence") or [])
        mode = str(item.get("PresentationSizeMode", SCALE_TO_FIT)).strip().upper() or SCALE_TO_FIT
        ratio = float(item.get("PresentationPixelMagnificationRatio") or 0)
        magnification = ratio if mode == MAGNIFY and ratio > 0 else 1.0
        areas.append(DisplayedArea(uids if set(uids) != set(every) else (), (left, top, right, bottom),
                                   mode if mode in (SCALE_TO_FIT, TRUE_SIZE, MAGNIFY) else SCALE_TO_FIT,
                                   magnification))
    return tuple(areas)
