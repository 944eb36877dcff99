"""Presentation states in the reading window: the reader's view saved as one from the View menu, and
one chosen from the chooser applied to the viewport, checked on the pixels shown."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydicom.dataset import Dataset
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.display import Window
from app.imaging.measure import Kind, Measurement
from app.security.sessions import Session
from app.ui.main_window import MainWindow
from app.ui.presentation_states import NONE_CHOSEN, STATE_COLOUR
from app.vault import Vault
from tests.ui.conftest import Importer

PATIENT = Patient("P-GSPS", "Shown^Sheila")
READERS_WINDOW = Window(1000, 300)  # bone: the water of the phantom goes black


def _orange(pixels: np.ndarray) -> int:
    return int((np.abs(pixels.astype(int) - STATE_COLOUR.getRgb()[:3]).sum(axis=2) < 40).sum())


def test_a_saved_state_chosen_again_applies_its_window_rotation_and_annotations(
        qtbot: QtBot, vault: Vault, session: Session, importer: Importer,
        open_window: Callable[..., MainWindow], grab_pixels: Callable[..., np.ndarray]) -> None:
    images: list[Dataset] = ct_study(PATIENT, slices=2, size=64)
    assert importer([(f"g{i}", to_bytes(ds)) for i, ds in enumerate(images)]).imported == 2
    window = open_window(session)
    assert window.open_study(str(images[0].StudyInstanceUID))
    states, viewport = window.presentation_states, window.grid.active
    view = viewport.view
    assert view.series is not None and states.save.isVisible()
    sop, _ = view.series.frame_of(view.index)
    vault.reading.save_measurement(session, Measurement(Kind.DISTANCE, sop, 0, ((8.0, 8.0), (56.0, 40.0))))
    view.set_window(READERS_WINDOW)
    view.rotate(90)
    saved = states.save_state()
    assert saved is not None and [s.sop_uid for s in states.listed()] == [saved.sop_uid]

    view.reset_view()
    view.reset_window()
    qtbot.wait(10)
    as_stored = grab_pixels(viewport)
    states.menu.aboutToShow.emit()
    (chosen,) = [a for a in states.menu.actions() if a.text() != NONE_CHOSEN]
    chosen.trigger()
    qtbot.wait(10)
    applied = grab_pixels(viewport)
    assert view.window == READERS_WINDOW and view.turn == (90, False, False)
    assert _orange(as_stored) == 0 and _orange(applied) > 40  # the state's line and its length
    assert (applied != as_stored).any(axis=2).mean() > 0.2  # darker (bone window) and turned

    states.menu.aboutToShow.emit()
    (none,) = [a for a in states.menu.actions() if a.text() == NONE_CHOSEN]
    none.trigger()
    qtbot.wait(10)
    assert _orange(grab_pixels(viewport)) == 0 and view.turn == (0, False, False)

    window.refresh()  # (the study now has the state's series, which hangs nowhere)
    (pr,) = [s for s in vault.reading.series(session, str(images[0].StudyInstanceUID)) if s.modality == "PR"]
    shown = viewport.series_uid
    assert not window.load_series(pr.series_uid) and viewport.series_uid == shown
    assert "PR on the toolbar" in window.statusBar().currentMessage()
