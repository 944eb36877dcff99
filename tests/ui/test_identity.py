"""Patient identity on screen: a study list row and the corner text name a study's own patient,
and a Patient ID that names two people here is marked where the reader sees it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from app.demo.studies import Patient, ct_study, to_bytes
from app.ui.main_window import MainWindow
from app.ui.study_list import IDENTITY_CONFLICT
from tests.ui.conftest import Importer, Reader


def _import(importer: Importer, patient: Patient, tag: str) -> str:
    datasets = ct_study(patient, slices=2, size=32, description=f"CT {tag}")
    report = importer([(f"{tag}-{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
    assert report.imported == 2 and not report.rejected
    return str(datasets[0].StudyInstanceUID)


def _orange(pixels: np.ndarray) -> int:
    """Pixels in the warning colour (anti-aliased text keeps its hue)."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return int(((r > 150) & (g > 60) & (g < r - 50) & (b < 70)).sum())


def test_the_study_list_and_corner_text_follow_each_studys_own_patient(
        importer: Importer, reader: Reader, open_window: Callable[..., MainWindow],
        grab_pixels: Callable[[QWidget], np.ndarray]) -> None:
    alpha = _import(importer, Patient("IDC-1", "Alpha^Anna", birth_date="19400101"), "alpha")
    beta = _import(importer, Patient("IDC-1", "Beta^Bea", birth_date="19900101"), "beta")
    first = _import(importer, Patient("", "Citizen^Jan", birth_date="19700101"), "noid1")
    second = _import(importer, Patient("", "Anonymized", birth_date=""), "noid2")
    window = open_window(reader.session)
    table = window.browser.study_table
    model = table.model()

    def cell(study_uid: str, role: Qt.ItemDataRole = Qt.ItemDataRole.DisplayRole) -> object:
        assert window.browser.select_study(study_uid)
        return table.currentIndex().siblingAtColumn(0).data(role)

    assert cell(alpha) == "\u26a0 Alpha, Anna" and cell(beta) == "\u26a0 Beta, Bea"
    assert cell(beta, Qt.ItemDataRole.ToolTipRole) == IDENTITY_CONFLICT
    assert cell(first) == "Citizen, Jan"
    assert cell(second) == "Anonymized", "never the first ID-less patient's name"
    assert cell(second, Qt.ItemDataRole.ToolTipRole) == "Anonymized"

    assert window.browser.select_study(beta)
    table.clearSelection()  # the selection colour would hide the text's own
    rect = table.visualRect(table.currentIndex().siblingAtColumn(0))
    pixels = grab_pixels(table.viewport())[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert _orange(pixels) > 20, "the marked row is drawn in the warning colour"
    assert window.browser.select_study(second)
    table.clearSelection()
    rect = table.visualRect(table.currentIndex().siblingAtColumn(0))
    pixels = grab_pixels(table.viewport())[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert _orange(pixels) == 0
    assert model.rowCount() >= 4

    assert window.open_study(beta)
    top_left = window.grid.active.view._corners[0]
    assert top_left[:2] == ["Beta Bea", "ID IDC-1"] and "\u26a0 ID also names another patient" in top_left
    assert window.open_study(second)
    assert window.grid.active.view._corners[0] == ["Anonymized", "ID (none)", "O"]
    assert window.errors == []
