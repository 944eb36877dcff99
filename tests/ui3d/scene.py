"""Run under a real X display: the MPR window on a CT phantom; saves what each pane shows.

    python -m tests.ui3d.scene OUT.npz

A separate process because VTK's Qt widget needs the xcb platform, while the rest of the UI tests
run Qt offscreen. The phantom has isotropic 2.5 mm voxels (140 × 140 × 40), and each plane pane is
sized to its image, so one voxel is one screen pixel and the panes can be compared with numpy.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from PySide6.QtWidgets import QApplication

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.display import apply_window
from app.imaging.pixels import decode_frames
from app.imaging.series import SeriesImages
from app.imaging.volume import build_volume, reference_slice
from app.ui.mpr_window import MprWindow
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
    window.set_window(window.volume.window)
    start = time.perf_counter()
    for step in range(20):
        window.move("axial", 1 if step % 2 else -1)
    saved["reslice_ms"] = np.array([(time.perf_counter() - start) / 20 * 1000])
    for preset in ("Bone", "MIP"):
        window.volume_pane.set_preset(preset)
        saved[f"render_{preset}"] = window.volume_pane.pixels()
    np.savez(out, **saved)
    window.close()


if __name__ == "__main__":
    main(sys.argv[1])
