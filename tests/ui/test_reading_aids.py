"""The series strip, the tag browser, and copying or saving a view as a disclosure: checked on
what the screen shows, on the clipboard and file, and on the audit trail and the accounting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import NotPermitted
from app.imaging.tags import WITHHELD
from app.media.disclosures import IdentityCheck, Purpose, RecipientKind
from app.media.view_copy import ViewCopy
from app.security.roles import Field, Role
from app.security.sessions import Session
from app.ui.main_window import MainWindow
from app.ui.series_strip import SeriesStrip
from app.ui.view_copy_dialog import ViewCopyDialog
from app.vault import Vault
from tests.ui.conftest import Importer, Reader, image_array, logged_in
from tests.ui.test_browser import _drop
from tests.ui.test_lock import unlock

Grab = Callable[[QWidget], np.ndarray]
PATIENT = Patient("P-AIDS", "Aids^Anna")


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path) -> Iterator[None]:
    """The strip's remembered state goes to this test's folder, not the user's."""
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.NativeFormat, scope, str(tmp_path))
    yield


@pytest.fixture(scope="module")
def study(importer: Importer) -> list[list[Dataset]]:
    """Two series of one study; the second's stored window (1000/400) shows water black."""
    first = ct_study(PATIENT, slices=3, size=64)
    second = ct_study(PATIENT, slices=3, size=64, study_uid=first[0].StudyInstanceUID)
    for ds in second:
        ds.SeriesNumber, ds.WindowCenter = 2, 1000
    report = importer([(f"aids-{i}", to_bytes(ds)) for i, ds in enumerate(first + second)])
    assert report.imported == 6
    return [first, second]


@pytest.fixture(scope="module")
def officer(vault: Vault, admin_session: Session) -> Session:
    return logged_in(vault, admin_session, "aids-officer", Role.PRIVACY_OFFICER)


@pytest.fixture(scope="module")
def technologist(vault: Vault, admin_session: Session) -> Session:
    return logged_in(vault, admin_session, "aids-tech", Role.TECHNOLOGIST)


def _reading(open_window: Callable[..., MainWindow], session: Session, study: list[list[Dataset]],
             layout: str = "1x1") -> MainWindow:
    window = open_window(session, layout=layout)
    assert window.open_study(study[0][0].StudyInstanceUID)
    return window


def _events(vault: Vault, user: str, kind: EventType) -> list:
    return vault._gate._audit.records(AuditQuery(user=user, event_type=kind))


def _cells(strip: SeriesStrip, grab: Grab) -> list[np.ndarray]:
    """What the strip shows of each of its first two thumbnails."""
    strip.repaint()
    shown = grab(strip).astype(int)
    return [shown[r.top():r.bottom(), r.left():r.right()]
            for r in (strip.visualItemRect(strip.item(n)) for n in range(2))]


def _blue(cells: list[np.ndarray]) -> list[bool]:
    """Which cells are tinted with the selection's blue."""
    return [int(((c[..., 2] - c[..., 0]) > 60).sum()) > 200 for c in cells]


def test_the_strip_shows_the_series_and_hangs_what_is_clicked_or_dragged(
        qtbot: QtBot, vault: Vault, reader: Reader, open_window: Callable[..., MainWindow],
        study: list[list[Dataset]], grab_pixels: Grab) -> None:
    window = _reading(open_window, reader.session, study, "1x2")
    strip, viewports = window.reading_aids.strip, window.grid.viewports
    uids = [series[0].SeriesInstanceUID for series in study]
    assert strip.isVisible() and strip.count() == 2
    qtbot.waitUntil(lambda: not strip.item(1).icon().isNull(), timeout=10000)
    strip.repaint()
    cells = _cells(strip, grab_pixels)
    # The second series' thumbnail at its own window (1000/400): the bone rod grey, the water black.
    assert ((cells[1] > 100) & (cells[1] < 160)).all(axis=2).sum() > 3
    assert _blue(cells) == [True, False]  # the viewport's series is highlighted
    assert strip.currentItem().data(Qt.ItemDataRole.UserRole) == viewports[0].series_uid == uids[0]

    before = grab_pixels(viewports[0].view)
    window.grid.set_active(viewports[0])
    second = strip.visualItemRect(strip.item(1)).center()
    qtbot.mouseClick(strip.viewport(), Qt.MouseButton.LeftButton, pos=second)
    assert viewports[0].series_uid == uids[1]
    after = grab_pixels(viewports[0].view)
    centre = tuple(s // 2 for s in after.shape[:2])
    assert after[centre].max() < 20 < before[centre].max()  # water: mid-grey at 40/400, black at 1000/400
    assert strip.currentItem().data(Qt.ItemDataRole.UserRole) == uids[1]
    cells = _cells(strip, grab_pixels)
    assert _blue(cells) == [False, True]
    assert (cells[0] >= 250).all(axis=2).sum() > 3  # the first's bone rod, white at 40/400

    viewports[1].clear()
    assert _drop(viewports[1], strip.mimeData([strip.item(0)]))
    assert viewports[1].series_uid == uids[0] and window.grid.active is viewports[1]
    assert strip.currentItem().data(Qt.ItemDataRole.UserRole) == uids[0]

    window.lock()
    assert strip.count() == 0  # nothing of the patient stays on the strip
    unlock(qtbot, window, reader.password, reader.next_code())
    assert not window.locked and strip.count() == 2  # read back with the viewports
    assert strip.currentItem().data(Qt.ItemDataRole.UserRole) == window.grid.active.series_uid


def test_the_strip_is_toggled_and_stays_as_left(reader: Reader, open_window: Callable[..., MainWindow],
                                                study: list[list[Dataset]]) -> None:
    window = _reading(open_window, reader.session, study)
    aids = window.reading_aids
    assert aids.show_strip.shortcut().toString() == "Ctrl+B"
    aids.show_strip.trigger()
    assert not aids.strip.isVisible() and aids.strip.count() == 0
    again = _reading(open_window, reader.session, study)
    assert not again.reading_aids.strip.isVisible() and not again.reading_aids.show_strip.isChecked()
    again.reading_aids.show_strip.trigger()
    assert again.reading_aids.strip.isVisible() and again.reading_aids.strip.count() == 2


def test_the_tag_browser_lists_filters_and_is_audited(
        qtbot: QtBot, vault: Vault, reader: Reader, open_window: Callable[..., MainWindow],
        study: list[list[Dataset]], grab_pixels: Grab) -> None:
    window = _reading(open_window, reader.session, study)
    browser = window.reading_aids.browse_tags()
    assert browser is not None and browser.isVisible()
    rows = browser.shown_rows()
    assert ("(0008,0060)", "CS", "Modality", "CT") in rows
    assert ("(0010,0010)", "PN", "PatientName", "Aids^Anna") in rows  # a radiologist sees every field
    (read,) = [e for e in _events(vault, reader.name, EventType.INSTANCES_READ) if "attributes" in e.detail]
    assert read.studies == (study[0][0].StudyInstanceUID,) and read.detail["attributes"] == len(
        [r for r in rows if r[0]])

    whole = grab_pixels(browser.tree)
    qtbot.keyClicks(browser.filter_edit, "modality")
    assert [r[2] for r in browser.shown_rows()] == ["Modality"]
    assert browser.count.text().startswith("1 of ")
    assert not np.array_equal(grab_pixels(browser.tree), whole)  # the screen shows the narrower list


def test_the_tag_browser_withholds_what_the_role_may_not_see(
        vault: Vault, technologist: Session, open_window: Callable[..., MainWindow],
        study: list[list[Dataset]], monkeypatch: pytest.MonkeyPatch) -> None:
    # As a signed site policy narrowing the technologist to the patient ID puts it in force.
    monkeypatch.setitem(vault._gate.rules.visible, Role.TECHNOLOGIST, frozenset({Field.PATIENT_ID}))
    window = _reading(open_window, technologist, study)
    browser = window.reading_aids.browse_tags()
    assert browser is not None
    rows = {r[2]: r[3] for r in browser.shown_rows()}
    assert rows["PatientName"] == rows["PatientBirthDate"] == WITHHELD
    assert rows["PatientID"] == "P-AIDS" and rows["Modality"] == "CT"
    assert not window.reading_aids.copy.isVisible()  # copying a view is the radiologist's


def _copy(qtbot: QtBot, window: MainWindow, reader: Reader, out: Path | None = None) -> ViewCopyDialog:
    dialog = window.reading_aids.copy_view(out)
    assert dialog is not None and dialog.isVisible()
    qtbot.keyClicks(dialog.recipient, "Dr Who, tumour board")
    qtbot.keyClicks(dialog.code, reader.next_code())
    dialog.ok_button.click()
    assert not dialog.isVisible(), dialog.error_label.text()
    return dialog


def _rendered(window: MainWindow) -> np.ndarray:
    view = window.grid.active.view
    assert view.series is not None
    return view.series.render(view.index, overlays=False)


def test_a_copied_view_is_a_recorded_disclosure(
        qtbot: QtBot, vault: Vault, reader: Reader, officer: Session,
        open_window: Callable[..., MainWindow], study: list[list[Dataset]]) -> None:
    window = _reading(open_window, reader.session, study)
    _copy(qtbot, window, reader)
    pasted = image_array(QApplication.clipboard().image())
    assert np.array_equal(pasted[..., 0], _rendered(window))  # the stored frame, no corner text
    (made,) = [d for d in vault.disclosure.disclosures(officer, "P-AIDS") if d.user == reader.name]
    assert (made.media, made.recipient, made.deidentified, made.instances) == (
        "clipboard", "Dr Who, tumour board", True, 1)
    (event,) = _events(vault, reader.name, EventType.EXPORT)
    assert event.detail["disclosure"] == made.id and event.detail["media"] == "clipboard"


def test_a_saved_view_is_a_recorded_disclosure(
        qtbot: QtBot, vault: Vault, reader: Reader, officer: Session, tmp_path: Path,
        open_window: Callable[..., MainWindow], study: list[list[Dataset]],
        read_png: Callable[[Path], np.ndarray]) -> None:
    window = _reading(open_window, reader.session, study)
    _copy(qtbot, window, reader, tmp_path / "view.png")
    assert np.array_equal(read_png(tmp_path / "view.png")[..., 0], _rendered(window))
    (made,) = [d for d in vault.disclosure.disclosures(officer, "P-AIDS") if d.user == reader.name]
    assert made.media == "image file"
    assert [e.detail["media"] for e in _events(vault, reader.name, EventType.EXPORT)] == ["image file"]


def test_copying_is_refused_without_the_permission_and_for_burnt_in_pixels(
        vault: Vault, reader: Reader, technologist: Session, importer: Importer) -> None:
    ultrasound = ct_study(Patient("P-US", "Sound^Ulla"), slices=1, size=16)
    ultrasound[0].Modality = "US"  # prone to burnt-in text, and it does not say NO
    assert importer([("aids-us", to_bytes(ultrasound[0]))]).imported == 1
    ds = ultrasound[0]
    copy = ViewCopy(ds.SeriesInstanceUID, ds.SOPInstanceUID, 0, None, False, RecipientKind.PROVIDER,
                    "Dr Who", Purpose.TREATMENT, IdentityCheck.KNOWN_TO_STAFF)
    with pytest.raises(NotPermitted, match="may not copy or save a displayed image"):
        vault.disclosure.copy_view(technologist, copy, "000000")
    (refused,) = [e for e in _events(vault, "aids-tech", EventType.ACCESS_REFUSED)
                  if e.detail.get("action") == "copy or save a displayed image"]
    assert refused.detail["why"] == "role"

    with pytest.raises(NotPermitted, match="burnt-in"):
        vault.disclosure.copy_view(reader.session, copy, reader.next_code())
    (failed,) = _events(vault, reader.name, EventType.EXPORT)
    assert failed.outcome != 0 and failed.studies == (ds.StudyInstanceUID,)
    data = vault.disclosure.copy_view(reader.session, ViewCopy(**{**copy.__dict__, "identified": True}),
                                      reader.next_code())
    assert data.startswith(b"\x89PNG")
