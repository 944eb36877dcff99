"""The 3D/MPR window of the active viewport's series, one at a time, for the main window.

VTK is imported only when 3D is asked for, so the reading window starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

from app import trace
from app.imaging.volume import plan_volume

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow


class ThreeD:
    """Opens the 3D window beside the reading window and closes it with the window or the lock."""

    def __init__(self, window: MainWindow) -> None:
        self._window = window
        self.mpr_window: QWidget | None = None

    def open(self) -> QWidget | None:
        """MPR and volume rendering of the active viewport's series, in a window of its own."""
        trace.mark("mpr.requested")
        window = self._window
        active = window.grid.active
        series = active.view.series
        if series is None:
            window.show_error("Open a series first: 3D shows the series of the active viewport.")
            return None
        from app.ui.mpr_window import MprWindow, display_available  # VTK loads only for 3D

        if not display_available():
            window.show_error("3D needs a display: VTK cannot draw on Qt's offscreen platform.")
            return None
        plan = window.ask(plan_volume, series)  # the slices are decoded in the window, with progress
        if plan is None:
            return None
        self.close()
        summary = window.series_summary(active.series_uid)
        title = f"3D / MPR — {summary.modality} {summary.description}" if summary else "3D / MPR"
        self.mpr_window = MprWindow(series, plan, title, window)
        self.mpr_window.show()
        return self.mpr_window

    def close(self) -> None:
        if self.mpr_window is not None:
            self.mpr_window.close()
            self.mpr_window.deleteLater()  # the volume goes with it
            self.mpr_window = None
