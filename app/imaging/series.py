"""A series as the viewer sees it: frames in slice order, decoded on demand."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from app.imaging.display import Window
from app.imaging.geometry import Plane, nearest_slice, parallel
from app.imaging.pixels import Decoded, FrameInfo, native

Loader = Callable[[FrameInfo], Decoded]
# Many native images at once, in the order asked (through the service: one streamed request)
Bulk = Callable[[list[FrameInfo]], list[Decoded]]
CACHE_INSTANCES = 64
OVERLAY_GREY = 255  # overlay planes are drawn in full white, as the standard's display does


@dataclass(frozen=True)
class SeriesFrames:
    """A series as the index describes it (nothing decrypted): its images, modality and frame of
    reference. A client of the workstation service receives this and fetches the pixels itself."""

    frames: list[FrameInfo]
    modality: str = ""
    frame_of_reference: str = ""

    def images(self, loader: Loader, bulk: Bulk | None = None) -> SeriesImages:
        return SeriesImages(self.frames, loader, modality=self.modality,
                            frame_of_reference=self.frame_of_reference, bulk=bulk)


def _frame_key(info: FrameInfo, frame: int) -> tuple[float, float, str, int]:
    """Order against the slice normal when geometry is known (axial: head first), else by number
    and then frame: an enhanced multi-frame image's frames are placed one by one, wherever the
    modality wrote them in the file."""
    position = info.frame_position(frame)
    if position and info.orientation:
        row, col = np.array(info.orientation[:3]), np.array(info.orientation[3:])
        return (0.0, -float(np.dot(np.cross(row, col), position)), info.sop_uid, frame)
    return (1.0, float(info.number or 0), info.sop_uid, frame)


class SeriesImages:
    def __init__(self, infos: list[FrameInfo], loader: Loader, *, modality: str = "",
                 frame_of_reference: str = "", bulk: Bulk | None = None) -> None:
        self.instances = sorted(infos, key=lambda info: _frame_key(info, 0))
        self.modality = modality
        self.frame_of_reference = frame_of_reference
        self._load = loader
        self._index = sorted(((inst, f) for inst, info in enumerate(self.instances)
                              for f in range(info.frames)),
                             key=lambda pair: _frame_key(self.instances[pair[0]], pair[1]))
        self._cache: OrderedDict[int, Decoded] = OrderedDict()
        self._bulk = bulk
        self._held: dict[int, Decoded] = {}

    def __len__(self) -> int:
        return len(self._index)

    def info(self, i: int) -> FrameInfo:
        return self.instances[self._index[i][0]]

    def _decoded(self, i: int, keep: bool = True) -> tuple[Decoded, int]:
        inst, frame = self._index[i]
        decoded = self._cache.get(inst)
        if decoded is None and not keep:
            decoded = self._held.get(inst)
        if decoded is None:
            decoded = self._load(self.instances[inst])
            if not keep:
                return decoded, frame
            self._cache[inst] = decoded
            if len(self._cache) > CACHE_INSTANCES:
                self._cache.popitem(last=False)
        elif keep:  # (the threads filling a volume leave the GUI thread's cache as it is)
            self._cache.move_to_end(inst)
        return decoded, frame

    def _instance(self, inst: int) -> Decoded:
        held = self._held.get(inst)
        return held if held is not None else self._load(self.instances[inst])

    @contextmanager
    def whole(self) -> Iterator[None]:
        """One pass over every image (a volume): where many images can be fetched at once (through
        the service), the native ones are, and held for the pass only (``keep=False`` reads)."""
        wanted = [inst for inst, info in enumerate(self.instances) if native(info)]
        if self._bulk is None or len(wanted) < 2:
            yield
            return
        self._held = dict(zip(wanted, self._bulk([self.instances[inst] for inst in wanted]), strict=True))
        try:
            yield
        finally:
            self._held = {}

    def raw(self, i: int) -> np.ndarray:
        decoded, frame = self._decoded(i)
        return decoded.frames[frame]

    def is_colour(self, i: int) -> bool:
        return self._decoded(i)[0].presentation.is_colour

    def values(self, i: int, *, keep: bool = True) -> np.ndarray:
        """Modality values (e.g. Hounsfield units) of frame ``i``.

        ``keep=False`` decodes without the recently-used cache (one pass over a whole series, from
        several threads: the cache is for scrolling in the UI thread).
        """
        decoded, frame = self._decoded(i, keep)
        return decoded.presentation.modality(decoded.frames[frame], frame)

    def windows(self, i: int) -> tuple[Window, ...]:
        """The windows the modality stored for frame ``i`` (the reader may step through them)."""
        decoded, frame = self._decoded(i)
        return decoded.presentation.stored_windows(frame)

    def uses_voi_lut(self, i: int) -> bool:
        return self._decoded(i)[0].presentation.voi_lut

    def slice_thickness(self, i: int) -> float | None:
        """Slice Thickness (mm) of frame ``i``'s image; None when it does not say."""
        return self._decoded(i)[0].slice_thickness

    def frame_of(self, i: int) -> tuple[str, int]:
        """The SOP Instance UID and frame number of display index ``i``."""
        inst, frame = self._index[i]
        return self.instances[inst].sop_uid, frame

    def plane(self, i: int) -> Plane | None:
        """Where frame ``i`` lies in the patient; None without position and orientation."""
        inst, frame = self._index[i]
        info = self.instances[inst]
        position = info.frame_position(frame)
        if not position or not info.orientation or len(info.orientation) != 6:
            return None
        return Plane.of(position, info.orientation, info.pixel_spacing, info.rows, info.columns)

    def matching_index(self, plane: Plane, offset: float = 0.0) -> int | None:
        """The frame of this series nearest to a parallel ``plane`` of another (same patient)
        series, ``offset`` mm further along its normal; None when they cannot be matched."""
        found = [self.plane(i) for i in range(len(self))]
        planes = [p for p in found if p is not None]
        if not planes or len(planes) < len(found) or not parallel(plane, planes[0]):
            return None
        return nearest_slice(plane.origin, plane.normal, planes, offset)

    def default_window(self, i: int = 0) -> Window:
        decoded, frame = self._decoded(i)
        return decoded.presentation.default_window(self.values(i), frame)

    def render(self, i: int, window: Window | None = None, *, invert: bool = False,
               overlays: bool = True) -> np.ndarray:
        """Display-ready 8-bit pixels: (rows, cols) grey or (rows, cols, 3) colour.

        ``window`` None means what the image says: its VOI LUT or first window. ``invert``
        reverses the grey scale on top of MONOCHROME1 and Presentation LUT Shape.
        """
        decoded, frame = self._decoded(i)
        look = decoded.presentation
        if look.is_colour:
            out = look.colour(decoded.frames[frame])
            if invert:
                out = 255 - out
        else:
            out = look.grey(self.values(i), window, invert=invert, frame=frame)
        if overlays and look.overlays:
            out = out.copy() if not out.flags.writeable else out
            for overlay in look.overlays:
                plane = overlay.plane(frame)
                if plane is not None:
                    _draw_plane(out, plane, overlay.origin)
        return out

    def volume(self, threads: int = 2) -> np.ndarray:
        """Every frame stacked in display order (stored values) for single-sample series of one
        frame size."""
        shapes = {(info.rows, info.columns, info.samples) for info in self.instances}
        if len(shapes) != 1 or next(iter(shapes))[2] != 1:
            raise ValueError("The series mixes image sizes or is colour; it has no single volume.")
        with self.whole(), ThreadPoolExecutor(threads) as pool:
            parts = [decoded.frames for decoded in pool.map(self._instance, range(len(self.instances)))]
        stacked = np.concatenate(parts) if len(parts) > 1 else parts[0]
        starts = np.cumsum([0] + [info.frames for info in self.instances])
        order = [starts[inst] + frame for inst, frame in self._index]
        return stacked if order == list(range(len(order))) else stacked[order]


def _draw_plane(out: np.ndarray, plane: np.ndarray, origin: tuple[int, int]) -> None:
    """Set the overlay's pixels to white where it lies inside the image (origin may be negative)."""
    row, col = origin
    rows, cols = out.shape[:2]
    top, left = max(row, 0), max(col, 0)
    bottom, right = min(row + plane.shape[0], rows), min(col + plane.shape[1], cols)
    if top >= bottom or left >= right:
        return
    mask = plane[top - row:bottom - row, left - col:right - col]
    out[top:bottom, left:right][mask] = OVERLAY_GREY
