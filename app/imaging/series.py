"""A series as the viewer sees it: frames in slice order, decoded on demand."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.imaging.display import Window, apply_window, auto_window, modality_values, to_rgb8
from app.imaging.pixels import FrameInfo

Loader = Callable[[FrameInfo], np.ndarray]
CACHE_INSTANCES = 64


def _slice_key(info: FrameInfo) -> tuple[float, float, str]:
    """Order against the slice normal when geometry is known (axial: head first), else by number."""
    if info.position and info.orientation:
        row, col = np.array(info.orientation[:3]), np.array(info.orientation[3:])
        return (0.0, -float(np.dot(np.cross(row, col), info.position)), info.sop_uid)
    return (1.0, float(info.number or 0), info.sop_uid)


class SeriesImages:
    def __init__(self, infos: list[FrameInfo], loader: Loader) -> None:
        self.instances = sorted(infos, key=_slice_key)
        self._load = loader
        self._index = [(inst, f) for inst, info in enumerate(self.instances)
                       for f in range(info.frames)]
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._index)

    def info(self, i: int) -> FrameInfo:
        return self.instances[self._index[i][0]]

    def raw(self, i: int) -> np.ndarray:
        inst, frame = self._index[i]
        frames = self._cache.get(inst)
        if frames is None:
            frames = self._load(self.instances[inst])
            self._cache[inst] = frames
            if len(self._cache) > CACHE_INSTANCES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(inst)
        return frames[frame]

    def values(self, i: int) -> np.ndarray:
        """Modality values (e.g. Hounsfield units) of frame ``i``."""
        info = self.info(i)
        return modality_values(self.raw(i), info.slope, info.intercept)

    def default_window(self, i: int = 0) -> Window:
        info = self.info(i)
        if info.window_center is not None and info.window_width and info.window_width >= 1:
            return Window(info.window_center, info.window_width)
        return auto_window(self.values(i))

    def render(self, i: int, window: Window | None = None) -> np.ndarray:
        """Display-ready 8-bit pixels: (rows, cols) grey or (rows, cols, 3) colour."""
        info = self.info(i)
        if info.samples > 1:
            return to_rgb8(self.raw(i))
        return apply_window(self.values(i), window or self.default_window(i),
                            invert=info.photometric == "MONOCHROME1")

    def volume(self, threads: int = 2) -> np.ndarray:
        """Every frame stacked (stored values) for single-sample series of one frame size."""
        shapes = {(info.rows, info.columns, info.samples) for info in self.instances}
        if len(shapes) != 1 or next(iter(shapes))[2] != 1:
            raise ValueError("The series mixes image sizes or is colour; it has no single volume.")
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(self._load, self.instances))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
