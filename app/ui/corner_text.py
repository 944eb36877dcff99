"""What a viewport's bottom corners say: where the reader is in the series and the window in use.

Nothing here identifies the patient (that is the top corners' text, which the caller filters by
role), so these lines may show in any view.
"""

from __future__ import annotations

from app.imaging.display import Window
from app.imaging.series import SeriesImages


def level_text(value: float) -> str:
    """Window numbers as readers quote them: whole numbers, decimals only for small ranges."""
    return f"{value:.0f}" if abs(value) >= 100 or value == round(value) else f"{value:.3g}"


def bottom_text(series: SeriesImages, index: int, window: Window | None, window_chosen: bool,
                cine_fps: float | None) -> tuple[str, str]:
    """Bottom left: the image number and, while cine runs (``cine_fps``), its rate. Bottom right:
    the window, or "VOI LUT" while the series' own LUT applies; nothing for colour images."""
    position = f"Im {index + 1}/{len(series)}"
    if cine_fps is not None:
        position += f"  Cine {cine_fps:.0f} fps"
    if window is None:
        return position, ""
    if not window_chosen and series.uses_voi_lut(index):
        return position, "VOI LUT"
    return position, f"W:{level_text(window.width)} L:{level_text(window.center)}"
