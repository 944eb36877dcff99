"""What a viewport's bottom corners say: where the reader is in the series, at what zoom, and the
window in use.

Nothing here identifies the patient (that is the top corners' text, which the caller filters by
role), so these lines may show in any view. Images and frames are counted as the series list and
the status bar count them: an image is an instance, and a multi-frame image's frames are counted
as frames.
"""

from __future__ import annotations

from app.imaging.display import Window
from app.imaging.series import SeriesImages


def level_text(value: float) -> str:
    """Window numbers as readers quote them: whole numbers, decimals only for small ranges."""
    return f"{value:.0f}" if abs(value) >= 100 or value == round(value) else f"{value:.3g}"


def position_text(series: SeriesImages, index: int) -> str:
    """"Im 5/60" in a series of single-frame images; "Fr 5/30" in one multi-frame image, and
    "Fr 5/30 · Im 1/2" when a series holds several."""
    images = len(series.instances)
    if len(series) == images:
        return f"Im {index + 1}/{images}"
    position = f"Fr {index + 1}/{len(series)}"
    if images > 1:
        sop_uid, _ = series.frame_of(index)
        number = next(i for i, info in enumerate(series.instances) if info.sop_uid == sop_uid)
        position += f" · Im {number + 1}/{images}"
    return position


def series_size(series: SeriesImages | None) -> str:
    """"60 images", or "1 image · 30 frames" when the series holds multi-frame images."""
    images = len(series.instances) if series is not None else 0
    size = f"{images} image{'' if images == 1 else 's'}"
    if series is not None and len(series) != images:
        size += f" · {len(series)} frames"
    return size


def slice_lines(series: SeriesImages, index: int) -> list[str]:
    """Slice location along the slice normal and slice thickness, in mm, as far as they are known
    (a line each, so that the bottom corners stay narrow beside each other)."""
    plane = series.plane(index)
    thickness = series.slice_thickness(index)
    lines = []
    if plane is not None:
        lines.append(f"Loc {float(plane.origin @ plane.normal) + 0.0:.1f} mm")
    if thickness is not None:
        lines.append(f"Thk {thickness:.3g} mm")
    return lines


def bottom_text(series: SeriesImages, index: int, window: Window | None, window_chosen: bool,
                cine_fps: float | None, zoom: float) -> tuple[str, str]:
    """Bottom left, one line each: the zoom (screen pixels per image pixel, in per cent), slice
    location and thickness, and the image number with, while cine runs (``cine_fps``), its rate.
    Bottom right: the window, or "VOI LUT" while the series' own LUT applies; nothing for colour."""
    position = position_text(series, index)
    if cine_fps is not None:
        position += f"  Cine {cine_fps:.0f} fps"
    left = "\n".join([f"Zoom {zoom * 100:.0f}%", *slice_lines(series, index), position])
    if window is None:
        return left, ""
    if not window_chosen and series.uses_voi_lut(index):
        return left, "VOI LUT"
    return left, f"W:{level_text(window.width)} L:{level_text(window.center)}"
