"""Run under a real X display: Ctrl+M in the reading window, as a reader opens 3D.

    CUSTODIAN_TRACE=TRACE python -m tests.ui3d.opening OUT.npz SOURCE

SOURCE is a folder of DICOM files (the benchmark's CT) or a number of slices of the demo CT
phantom (512 × 512). The application's own trace times the opening; this saves what the three
planes showed the first time they were on screen, whether the loading progress was up at once,
the panes after the window was resized, and whether Esc and Ctrl+W close the window. It also
times the volume alone (decoded from the vault with no window), the floor of any opening.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.volume import build_volume
from app.security.roles import Role
from app.ui.main_window import MainWindow
from app.ui.mpr_window import MprWindow
from tests.conftest import VaultEnv, make_env
from tests.ui3d.panes import grab, placement, reference, wait_until


def main(out: str, source: str) -> None:
    QApplication([])
    saved: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as home:
        env = make_env(Path(home) / "home")
        env.add("tech", Role.TECHNOLOGIST)
        env.add("rad", Role.RADIOLOGIST)
        study_uid = _import(env, source)
        reading = MainWindow(env.vault, env.login("rad"))
        reading.show()
        reading.refresh()
        reading.open_study(study_uid)
        assert wait_until(lambda: reading.grid.active.view.series is not None, 30)
        mpr = _open(reading)
        saved["progress_at_once"] = np.array([mpr.progress.isVisible()])
        mpr.planes_shown.connect(lambda: QTimer.singleShot(0, lambda: _keep(mpr, "shown", saved)))
        rendered: list[str] = []
        mpr.volume_pane.rendered.connect(rendered.append)
        assert wait_until(lambda: "shown_axial" in saved, 60), "the planes are shown"
        assert wait_until(lambda: bool(rendered), 300), "the volume rendering is shown"
        mpr.resize(760, 600)
        assert wait_until(lambda: all(p.width() < 380 for p in mpr.panes.values()), 10)
        _keep(mpr, "resized", saved)
        saved["esc_closes"] = np.array([_closes(mpr, Qt.Key.Key_Escape, Qt.KeyboardModifier.NoModifier)])
        again = _open(reading)
        saved["ctrl_w_closes"] = np.array([_closes(again, Qt.Key.Key_W, Qt.KeyboardModifier.ControlModifier)])
        series_uid = reading.grid.active.series_uid or ""
        reading.close()
        series = env.vault.reading.open_series(env.login("rad"), series_uid)
        start = time.monotonic()
        build_volume(series)
        saved["volume_alone"] = np.array([time.monotonic() - start])
        env.vault.close()
    np.savez(out, **saved)


def _import(env: VaultEnv, source: str) -> str:
    tech = env.login("tech")
    if source.isdigit():
        datasets = ct_study(Patient("MPR2", "Open^Quickly"), slices=int(source), size=512)
        env.vault.intake.import_bytes(tech, [(f"m{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
    else:
        env.vault.intake.import_paths(tech, [Path(source)])
    return env.vault.reading.studies(env.login("rad"))[0].study_uid


def _activate(window: QWidget) -> None:
    """Make ``window`` the one the keys go to (QWindow.isActive() is also true of a window whose
    transient parent is active, so ask the application)."""
    window.activateWindow()
    assert wait_until(lambda: QApplication.activeWindow() is window, 5)


def _open(reading: MainWindow) -> MprWindow:
    """Ctrl+M on the reading window, as the reader presses it; the MPR window it opened."""
    _activate(reading)
    QTest.keyClick(reading, Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)
    found = [w for w in QApplication.topLevelWidgets() if isinstance(w, MprWindow) and w.isVisible()]
    assert len(found) == 1
    return found[0]


def _closes(mpr: MprWindow, key: Qt.Key, modifier: Qt.KeyboardModifier) -> bool:
    """Whether ``key`` closes the window, which took the keyboard when it opened."""
    assert wait_until(lambda: QApplication.activeWindow() is mpr, 5)
    QTest.keyClick(mpr, key, modifier)
    return wait_until(lambda: not mpr.isVisible(), 5)


def _keep(mpr: MprWindow, tag: str, saved: dict[str, np.ndarray]) -> None:
    for plane, pane in mpr.panes.items():
        saved[f"{tag}_{plane}"] = grab(pane)
        saved[f"{tag}_{plane}_reference"] = reference(mpr, plane)
        saved[f"{tag}_{plane}_placement"] = placement(pane)
        saved[f"{tag}_{plane}_texts"] = np.array(sorted(pane.texts().items()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
