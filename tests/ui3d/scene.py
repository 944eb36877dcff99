"""Run under a real X display: the MPR window on a CT phantom; saves what each pane shows.

    python -m tests.ui3d.scene OUT.npz

A separate process because VTK's Qt widget needs the xcb platform, while the rest of the UI tests
run Qt offscreen. The phantom has isotropic 2.5 mm voxels (140 × 140 × 40), and each plane pane is
sized to its image, so one voxel is one screen pixel and the panes can be compared with numpy.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shiboken6
from PySide6.QtWidgets import QApplication

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.display import apply_window
from app.imaging.pixels import decode_frames
from app.imaging.series import SeriesImages
from app.imaging.volume import build_volume, reference_slice
from app.security.roles import Role
from app.ui.main_window import MainWindow
from app.ui.mpr_window import MprWindow
from tests.conftest import make_env
from tests.imaging.frames import info_of

SIZE, SLICES = 140, 40


def main(out: str) -> None:
    app = QApplication([])
    datasets = ct_study(Patient("MPR1", "Mpr^Test"), slices=SLICES, size=SIZE)
    data = {ds.SOPInstanceUID: to_bytes(ds) for ds in datasets}
    series = SeriesImages([info_of(raw) for raw in data.values()],
                          lambda info: decode_frames(info, data[info.sop_uid]), modality="CT")
    volume = build_volume(series)
    window = MprWindow(volume)
    sizes = {"axial": (SIZE, SIZE), "coronal": (SIZE, SLICES), "sagittal": (SIZE, SLICES)}
    for plane, pane in window.panes.items():
        pane.setFixedSize(*sizes[plane])
    window.show()
    app.processEvents()
    window.refresh()
    saved: dict[str, np.ndarray] = {}

    def keep(tag: str) -> None:
        for plane, pane in window.panes.items():
            saved[f"{tag}_{plane}"] = pane.pixels()
            mode = window.slab_mode or "mip"
            saved[f"{tag}_{plane}_reference"] = apply_window(
                reference_slice(volume, plane, window.cursor[plane], window.slab_slices(plane), mode),
                window.window)
        saved[f"{tag}_cursor"] = np.array([window.cursor[p] for p in ("axial", "coronal", "sagittal")])

    keep("start")
    pane = window.panes["coronal"]
    pane.clicked.emit(30.0, 5.0)  # a point on the coronal plane: column 30, row 5
    keep("clicked")
    window.set_slab("mip", 25.0)  # 10 slices of 2.5 mm: 11, centred on the cursor
    keep("slab")
    window.set_slab("", 25.0)
    window.set_tilt(30.0)
    window.panes["axial"].clicked.emit(50.0, 60.0)  # a point of the tilted plane
    saved["tilted_cursor"] = np.array([window.cursor[p] for p in ("axial", "coronal", "sagittal")])
    saved["tilted_point"] = np.array(window.reslicer.oblique_point(30.0, window.cursor["axial"], 50.0, 60.0))
    window.set_tilt(0.0)
    window.set_window(window.volume.window)
    start = time.perf_counter()
    for step in range(20):
        window.move("axial", 1 if step % 2 else -1)
    saved["reslice_ms"] = np.array([(time.perf_counter() - start) / 20 * 1000])
    for preset in ("Bone", "MIP"):
        window.volume_pane.set_preset(preset)
        saved[f"render_{preset}"] = window.volume_pane.pixels()
    window.close()
    saved["lock_closes_3d"] = np.array(_lock_closes_3d(datasets))
    np.savez(out, **saved)


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
