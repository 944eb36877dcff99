"""The study browser at the reading window's own size (issue 23, item 7): every column fits, the
description takes what is left, and a layout change with a study open hangs it again."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QSplitter, QTableView, QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.ui.main_window import MainWindow
from app.ui.study_list import RecordTable, StudyTableModel
from tests.ui.conftest import Importer, Reader

LONG = "CT CHEST ABDOMEN PELVIS WITH CONTRAST, ARTERIAL AND PORTAL VENOUS PHASES"
DESCRIPTION = [c.title for c in StudyTableModel.columns].index("Description")


def _import(importer: Importer, datasets: list[Dataset], tag: str) -> None:
    assert importer([(f"{tag}-{i}", to_bytes(ds)) for i, ds in enumerate(datasets)]).imported == len(datasets)


@pytest.fixture(scope="module")
def patient_studies(importer: Importer) -> dict[str, list[Dataset]]:
    """A patient with a long name and a long-described study; another with a one-series CT and a prior."""
    named = Patient("P-COLUMNS-0042", "Montgomery-Fairweather^Alexandra^Maria")
    patient = Patient("P-REHANG", "Hang^Harriet")
    studies = {"named": ct_study(named, slices=2, size=32, date="20260101"),
               "long": ct_study(named, slices=2, size=32, date="20251201", description=LONG),
               "current": ct_study(patient, slices=3, size=32, date="20260315"),
               "prior": ct_study(patient, slices=2, size=32, date="20250302", description="CT CHEST PRIOR")}
    for name, datasets in studies.items():
        _import(importer, datasets, f"columns-{name}")
    return studies


def _shown_whole(table: QTableView, row: int, column: int) -> bool:
    """The cell's text is drawn without an ellipsis in the width its column has."""
    text = table.model().index(row, column).data()
    margin = 2 * (table.style().pixelMetric(table.style().PixelMetric.PM_FocusFrameHMargin, None, table) + 1)
    width = table.horizontalHeader().sectionSize(column) - margin
    return QFontMetrics(table.font()).elidedText(text, Qt.TextElideMode.ElideRight, width) == text


def _assert_fits(table: RecordTable) -> None:
    header = table.horizontalHeader()
    sizes = [header.sectionSize(i) for i in range(header.count())]
    assert sum(sizes) <= table.viewport().width(), (sizes, table.viewport().width())
    assert table.horizontalScrollBar().maximum() == 0, "nothing scrolls off sideways"
    assert all(size >= least for size, least in zip(sizes, table.titles_width(), strict=True)), \
        "every title whole"


def test_the_columns_fit_and_the_description_takes_the_rest(
        open_window: Callable[..., MainWindow], reader: Reader,
        patient_studies: dict[str, list[Dataset]]) -> None:
    window = open_window(reader.session)  # the window's own default size
    table = window.browser.study_table
    window.browser.select_study(patient_studies["named"][0].StudyInstanceUID)
    _assert_fits(table)
    row = table.currentIndex().row()
    for column in range(table.model().columnCount()):
        # The patient's name, and in a crowded list (the suite's vault is shared) the patient ID,
        # may be elided: their tooltips say them whole. Dates and counts never are, the modalities
        # only in a list too narrow for anything else to give.
        if column not in (0, 1):
            assert _shown_whole(table, row, column), table.model().index(row, column).data()
    long_row = next(r for r in range(table.model().rowCount())
                    if table.model().index(r, DESCRIPTION).data() == LONG)
    assert table.model().index(long_row, DESCRIPTION).data(Qt.ItemDataRole.ToolTipRole) == LONG

    before = table.horizontalHeader().sectionSize(DESCRIPTION)
    splitter = window.sources.parentWidget()
    assert isinstance(splitter, QSplitter)
    splitter.setSizes([900, 380])  # the reader widens the list
    assert table.horizontalHeader().sectionSize(DESCRIPTION) > before
    _assert_fits(table)
    splitter.setSizes([500, 780])  # and narrows it
    _assert_fits(table)


def test_a_layout_change_hangs_the_study_and_its_prior_again(
        qtbot: QtBot, open_window: Callable[..., MainWindow], reader: Reader,
        grab_pixels: Callable[[QWidget], np.ndarray], patient_studies: dict[str, list[Dataset]]) -> None:
    current, prior = patient_studies["current"], patient_studies["prior"]
    window = open_window(reader.session)
    assert window.open_study(current[0].StudyInstanceUID)
    (first,) = window.grid.visible_viewports()
    first.view.set_index(2)

    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keySequence(window, "Ctrl+2")  # the reader wants the prior beside it

    left, right = window.grid.visible_viewports()
    assert left.series_uid == current[0].SeriesInstanceUID and left.view.index == 2, "left as it was"
    assert right.series_uid == prior[0].SeriesInstanceUID
    rect = right.view.image_rect()
    shown = grab_pixels(right.view)[rect.top(): rect.bottom() + 1, rect.left(): rect.right() + 1]
    assert len(np.unique(shown)) >= 3, "the prior's image is drawn"

    qtbot.keySequence(window, "Ctrl+1")
    assert [v.series_uid for v in window.grid.visible_viewports()] == [current[0].SeriesInstanceUID]
    assert window.errors == []


def test_a_narrow_list_elides_the_modalities_last_and_still_fits() -> None:
    """Name and description give first, then the ID, and the modalities ("CT, PR, SR, KO") only when
    nothing else can: the columns always fit, dates and counts whole."""
    from app.ui.study_list import StudyTableModel, fitted_widths

    columns = StudyTableModel.columns
    wanted = [120, 90, 84, 84, 110, 200, 50]
    least = [40, 30, 84, 84, 40, 60, 50]
    roomy = fitted_widths(wanted, least, columns, 700)
    assert roomy[4] == 110, "room enough: the modalities whole"
    narrow = fitted_widths(wanted, least, columns, 440)
    assert sum(narrow) <= 440 and narrow[2:4] == [84, 84] and narrow[6] == 50
    assert narrow[4] < 110 and narrow[0] == 40 and narrow[1] == 30 and narrow[5] == 60
