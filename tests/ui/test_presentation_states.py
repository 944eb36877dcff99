"""Presentation states in the reading window: the reader's view saved as one from the View menu, and
one chosen from the chooser applied to the viewport, checked on the pixels shown."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging import gsps
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


def _received_state(images: list[Dataset], voi: Dataset | None, area: Dataset) -> bytes:
    """A state as another viewer writes one: a VOI LUT instead of a window, and a displayed area."""
    state = gsps.build(images, [], Window(0, 100), rotation=0, flip=False, sop_uid=generate_uid(),
                       series_uid=generate_uid(), creator="other^viewer", software="test")
    if voi is not None:
        state.SoftcopyVOILUTSequence = Sequence([voi])
    else:
        del state.SoftcopyVOILUTSequence
    shown = state.DisplayedAreaSelectionSequence[0]
    for keyword in ("DisplayedAreaTopLeftHandCorner", "DisplayedAreaBottomRightHandCorner",
                    "PresentationSizeMode", "PresentationPixelMagnificationRatio"):
        if keyword in area:
            setattr(shown, keyword, area.get(keyword))
    return to_bytes(state)


def _uid(data: bytes) -> str:
    return str(pydicom.dcmread(BytesIO(data)).SOPInstanceUID)


def _step_lut() -> Dataset:
    """Air brighter than water, bone brightest: no window, which is monotonic, shows that."""
    table = np.array([3000] * 500 + [0] * 1000 + [4095] * 501, "<u2")  # inputs -1000 to 1000
    lut = Dataset()
    lut.add_new("LUTDescriptor", "SS", [len(table), -1000, 12])
    lut.add_new("LUTData", "OW", table.tobytes())
    voi = Dataset()
    voi.VOILUTSequence = Sequence([lut])
    return voi


def _area(top_left: list[int], bottom_right: list[int], mode: str, ratio: float | None = None) -> Dataset:
    area = Dataset()
    area.DisplayedAreaTopLeftHandCorner, area.DisplayedAreaBottomRightHandCorner = top_left, bottom_right
    area.PresentationSizeMode = mode
    if ratio is not None:
        area.PresentationPixelMagnificationRatio = ratio
    return area


def test_a_received_states_voi_lut_and_displayed_area_are_what_the_viewport_shows(
        qtbot: QtBot, session: Session, importer: Importer,
        open_window: Callable[..., MainWindow], grab_pixels: Callable[..., np.ndarray]) -> None:
    images: list[Dataset] = ct_study(Patient("P-LUT", "Table^Tess"), slices=1, size=64)
    lut = _received_state(images, _step_lut(), _area([1, 17], [32, 48], "SCALE TO FIT"))  # columns 0-31
    magnified = _received_state(images, None, _area([1, 1], [20, 20], "MAGNIFY", 2.0))
    true_size = _received_state(images, None, _area([1, 17], [32, 48], "TRUE SIZE"))
    assert importer([("ct", to_bytes(images[0])), ("lut", lut), ("big", magnified),
                     ("true", true_size)]).imported == 4
    window = open_window(session)
    assert window.open_study(str(images[0].StudyInstanceUID))
    states, view = window.presentation_states, window.grid.active.view
    view.set_smooth(False)  # every screen pixel one image pixel's grey

    assert states.apply(_uid(lut))
    qtbot.wait(10)
    shown, values = grab_pixels(view), view.frame_values()
    probes = [(x, y) for y in range(16, 48, 3) for x in range(0, 32, 3)]
    expected = {-1000: 187, 0: 0, 1000: 255}  # the table's 12-bit entries on 0-255
    for x, y in probes:
        at = view.to_widget((x, y))
        assert shown[int(at.y()), int(at.x()), 0] == expected[int(values[y, x])]
    assert {int(values[y, x]) for x, y in probes} == set(expected)  # air, water and bone all probed
    centre, corner = view.to_widget((15.5, 31.5)), view.to_widget((-0.5, 15.5))
    assert (abs(centre.x() - view.width() / 2), abs(centre.y() - view.height() / 2)) < (1, 1)
    side = 2 * min(centre.x() - corner.x(), centre.y() - corner.y())  # the area fills the smaller side
    assert abs(side - min(view.width(), view.height())) <= 1

    assert states.apply(_uid(magnified))
    qtbot.wait(10)
    middle = view.to_widget((9.5, 9.5))
    assert view.zoom == 2.0 and abs(middle.x() - view.width() / 2) < 1
    assert abs(middle.y() - view.height() / 2) < 1

    assert states.apply(_uid(true_size))  # fitted instead, and the reader told so
    assert view.to_widget((15.5, 31.5)) == centre and "true size" in window.statusBar().currentMessage()
