"""What the MPR panes show, read back as pixels and compared with numpy reformats."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QWidget

from app.imaging.display import apply_window
from app.imaging.volume import reference_slice
from app.ui.mpr_plane import PlanePane
from app.ui.mpr_window import MprWindow
from tests.peers.xvfb import Xvfb

ROOT = Path(__file__).resolve().parents[2]


def run_under_xvfb(args: list[str], timeout: float, extra: dict[str, str] | None = None) -> None:
    """``python -m ARGS`` on a private X server with Mesa (VTK renders there), as Qt's xcb platform."""
    server = Xvfb()
    server.start()
    env = {**os.environ, "DISPLAY": server.display, "QT_QPA_PLATFORM": "xcb", "LIBGL_ALWAYS_SOFTWARE": "1",
           **(extra or {})}
    try:
        run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]


def grab(widget: QWidget) -> np.ndarray:
    """The widget as drawn: (rows, columns, 3) RGB."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height, line = image.width(), image.height(), image.bytesPerLine()
    flat = np.frombuffer(image.constBits(), np.uint8, height * line)
    return flat.reshape(height, line)[:, : width * 3].reshape(height, width, 3).copy()


def reference(window: MprWindow, plane: str) -> np.ndarray:
    """The numpy reformat of what ``plane`` should show (whole voxels), windowed as shown."""
    state = window.state
    assert state is not None
    mode = state.slab_mode or "mip"
    values = reference_slice(state.volume, plane, state.cursor[plane], state.slab_slices(plane), mode)
    return apply_window(values, window.voi_window)


def placement(pane: PlanePane) -> np.ndarray:
    """Image column and row under the centre of widget pixel (0, 0), and their steps per pixel."""
    x0, y0 = pane.to_image(QPointF(0.5, 0.5))
    x1, y1 = pane.to_image(QPointF(1.5, 1.5))
    return np.array([x0, y0, x1 - x0, y1 - y0])


def agreement(shown: np.ndarray, expected: np.ndarray, where: np.ndarray) -> float:
    """The share of grey pixels on the plane that show the reformat's value (±1 level), after
    mapping every screen pixel to the image pixel under it (``where``: :func:`placement`).
    Coloured pixels (cursor lines, text) are left out."""
    x0, y0, sx, sy = where
    rows, cols = expected.shape
    column = np.floor(x0 + sx * np.arange(shown.shape[1]) + 0.5).astype(int)
    row = np.floor(y0 + sy * np.arange(shown.shape[0]) + 0.5).astype(int)
    inside = ((row >= 0) & (row < rows))[:, None] & ((column >= 0) & (column < cols))[None, :]
    want = expected[np.clip(row, 0, rows - 1)][:, np.clip(column, 0, cols - 1)]
    grey = (shown[..., 0] == shown[..., 1]) & (shown[..., 1] == shown[..., 2]) & inside
    assert grey.sum() > 0.8 * inside.sum(), "the plane fills the pane; lines and text cover little"
    close = np.abs(shown[..., 0].astype(int) - want.astype(int)) <= 1
    return float(close[grey].mean())


def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Run the event loop until ``done()`` or the time is up."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        QApplication.processEvents()
        time.sleep(0.002)
    return True
