"""Run under a real X display: the MPR window on a CT phantom; saves what each pane shows.

    python -m tests.ui3d.scene OUT.npz

A separate process because VTK's rendering needs a display (Xvfb with Mesa here), while the rest
of the UI tests run Qt offscreen. The phantom has isotropic 2.5 mm voxels (140 × 140 × 40), and
each plane pane is sized to its image, so one voxel is one screen pixel.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shiboken6
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.pixels import decode_frames
from app.imaging.series import SeriesImages
from app.imaging.volume import plan_volume
from app.security.roles import Role
from app.ui.main_window import MainWindow
from app.ui.mpr_window import MprWindow
from tests.conftest import make_env
from tests.imaging.frames import info_of
from tests.ui3d.panes import grab, placement, reference, wait_until

SIZE, SLICES = 140, 40


def main(out: str) -> None:
    app = QApplication([])
    datasets = ct_study(Patient("MPR1", "Mpr^Test"), slices=SLICES, size=SIZE)
    data = {ds.SOPInstanceUID: to_bytes(ds) for ds in datasets}
    series = SeriesImages([info_of(raw) for raw in data.values()],
                          lambda info: decode_frames(info, data[info.sop_uid]), modality="CT")
    window = MprWindow(series, plan_volume(series))
    sizes = {"axial": (SIZE, SIZE), "coronal": (SIZE, SLICES), "sagittal": (SIZE, SLICES)}
    for plane, pane in window.panes.items():
        pane.setFixedSize(*sizes[plane])
    window.toggle_annotations()  # (Ctrl+H) the bare planes, to compare with numpy pixel for pixel
    window.show()
    assert wait_until(lambda: window.state is not None, 30)
    saved: dict[str, np.ndarray] = {}

    def keep(tag: str) -> None:
        app.processEvents()
        for plane, pane in window.panes.items():
            saved[f"{tag}_{plane}"] = grab(pane)
            saved[f"{tag}_{plane}_reference"] = reference(window, plane)
            saved[f"{tag}_{plane}_placement"] = placement(pane)
        assert window.state is not None
        saved[f"{tag}_cursor"] = np.array([window.state.cursor[p] for p in ("axial", "coronal", "sagittal")])

    keep("start")
    window.panes["coronal"].clicked.emit(30.0, 5.0)  # a point on the coronal plane: column 30, row 5
    keep("clicked")
    window.set_slab("mip", 25.0)  # 10 slices of 2.5 mm: 11, centred on the cursor
    keep("slab")
    window.set_slab("", 25.0)
    window.set_tilt(30.0)
    window.panes["axial"].clicked.emit(50.0, 60.0)  # a point of the tilted plane
    state = window.state
    assert state is not None
    saved["tilted_cursor"] = np.array([state.cursor[p] for p in ("axial", "coronal", "sagittal")])
    saved["tilted_point"] = np.array(state.reslicer.oblique_point(30.0, state.cursor["axial"], 50.0, 60.0))
    window.set_tilt(0.0)
    start = time.perf_counter()
    for step in range(20):
        window.step("axial", 1 if step % 2 else -1)
    saved["reslice_ms"] = np.array([(time.perf_counter() - start) / 20 * 1000])
    _volume_rendering(window, saved)
    window.close()
    saved["closed_lets_go"] = np.array([window.state is None, window.volume_pane.shown_preset == ""])
    saved["lock_closes_3d"] = np.array(_lock_closes_3d(datasets))
    np.savez(out, **saved)


def _volume_rendering(window: MprWindow, saved: dict[str, np.ndarray]) -> None:
    """Each preset's picture; then a drag turns the volume and a resize draws it at the new size."""
    pane = window.volume_pane
    for preset in ("Bone", "MIP"):
        window.render_box.setCurrentText(preset)
        assert wait_until(lambda preset=preset: pane.shown_preset == preset, 120), preset
        saved[f"render_{preset}"] = grab(pane)
    before = grab(pane)
    centre = pane.rect().center()
    QTest.mousePress(pane, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre)
    QTest.mouseMove(pane, centre + QPoint(pane.width() // 4, 0))
    QTest.mouseRelease(pane, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       centre + QPoint(pane.width() // 4, 0))
    assert wait_until(lambda: not np.array_equal(grab(pane), before), 60)
    saved["render_turned"] = grab(pane)
    window.resize(window.width() + 120, window.height() + 80)
    resized = (pane.height(), pane.width())  # (the device pixel ratio is 1 under Xvfb)
    saved["render_resized"] = np.array([wait_until(
        lambda: pane.picture is not None and pane.picture.shape[:2] == resized, 60)])


def _lock_closes_3d(datasets: list) -> list[bool]:
    """Open 3D from the reading window, lock it: (3D shown before, 3D gone after, nothing left)."""
    with tempfile.TemporaryDirectory() as home:
        env = make_env(Path(home) / "home")
        env.add("tech", Role.TECHNOLOGIST)
        env.add("rad", Role.RADIOLOGIST)
        env.vault.intake.import_bytes(env.login("tech"),
                                      [(f"m{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
        reading = MainWindow(env.vault, env.login("rad"))
        reading.show()
        reading.refresh()
        reading.open_study(datasets[0].StudyInstanceUID)
        mpr = reading.open_3d()
        QApplication.processEvents()
        shown = mpr is not None and mpr.isVisible()
        reading.lock()
        QApplication.processEvents()
        gone = not shiboken6.isValid(mpr) or not mpr.isVisible()
        left = [w for w in QApplication.topLevelWidgets() if isinstance(w, MprWindow) and w.isVisible()]
        reading.close()
        env.vault.close()
        return [shown, gone, not left]


if __name__ == "__main__":
    main(sys.argv[1])
