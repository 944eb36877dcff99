"""The report panel, checked on what the screen shows: a structured report's text, a PDF page
drawn from memory by QtPdf, and a cited image opened in the active viewport by its link."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_phantom, ct_study, to_bytes
from app.imaging.report import PdfReport, StructuredReport
from app.ui.main_window import MainWindow
from app.ui.report_view import ReportView, pdf_pages
from tests.imaging import reports
from tests.ui.conftest import Importer, Reader, image_array

Grab = Callable[[QWidget], np.ndarray]
PATIENT = Patient("P-REPORT", "Report^Reta")


@pytest.fixture(scope="module")
def study(importer: Importer) -> tuple[list[Dataset], Dataset, Dataset]:
    """Three CT images whose bone rod moves far between slices, a Comprehensive SR citing the first
    image, and a PDF report."""
    images = ct_study(PATIENT, slices=3, size=64, phantom=lambda size, i: ct_phantom(size, 100 * i))
    cited, pdf = reports.comprehensive(images[0]), reports.pdf_report(images[0], "IMPRESSION: NORMAL")
    assert importer([(f"rep-{i}", to_bytes(ds)) for i, ds in enumerate([*images, cited, pdf])]).imported == 5
    return images, cited, pdf


def _report_view(window: MainWindow, series_uid: str) -> ReportView:
    assert window.load_series(series_uid)
    (view,) = [v for v in window.findChildren(ReportView) if v.isVisible()]
    return view


def _inked(pixels: np.ndarray) -> int:
    """Pixels that differ clearly from the most common colour (the background): the drawn text."""
    flat = pixels.reshape(-1, 3).astype(int)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    return int((np.abs(flat - colours[counts.argmax()]).sum(axis=1) > 120).sum())


def test_a_structured_report_shows_and_its_image_link_opens_the_image(
        qtbot: QtBot, reader: Reader, open_window: Callable[..., MainWindow],
        study: tuple[list[Dataset], Dataset, Dataset], grab_pixels: Grab) -> None:
    images, cited, _ = study
    window = open_window(reader.session)
    assert window.open_study(images[0].StudyInstanceUID)
    viewport = window.grid.active
    assert viewport.view.series is not None
    viewport.view.set_index(len(viewport.view.series) - 1)  # away from the cited image
    before = grab_pixels(viewport.view)

    view = _report_view(window, cited.SeriesInstanceUID)
    assert isinstance(view.current, StructuredReport) and view.choice.count() == 2
    qtbot.waitExposed(view)
    assert "Diameter: 8 mm" in view.text.toPlainText()
    assert _inked(grab_pixels(view.text)) > 500  # the report's text is on the screen

    found = view.text.document().find("open image")
    assert not found.isNull()
    view.text.setTextCursor(found)
    at = view.text.cursorRect(found).center()
    qtbot.mouseClick(view.text.viewport(), Qt.MouseButton.LeftButton, pos=at)
    series = viewport.view.series
    assert series is not None and series.frame_of(viewport.view.index)[0] == images[0].SOPInstanceUID
    after = grab_pixels(viewport.view)
    assert (np.abs(after.astype(int) - before.astype(int)).sum(axis=2) > 100).sum() > 50  # the rod moved

    window.lock()  # nothing of the patient stays on the screen
    qtbot.waitUntil(lambda: not [v for v in window.findChildren(ReportView) if v.isVisible()], timeout=5000)


def test_a_pdf_report_is_drawn_from_memory(
        qtbot: QtBot, reader: Reader, open_window: Callable[..., MainWindow],
        study: tuple[list[Dataset], Dataset, Dataset], grab_pixels: Grab) -> None:
    images, _, pdf = study
    window = open_window(reader.session, layout="1x2")
    assert window.open_study(images[0].StudyInstanceUID)
    assert [v for v in window.findChildren(ReportView) if v.isVisible()] == []  # hanging skips reports
    assert window.grid.viewports[1].series_uid is None
    view = _report_view(window, pdf.SeriesInstanceUID)
    qtbot.waitExposed(view)
    view.choice.setCurrentRow(next(i for i in range(view.choice.count())
                                   if "PDF" in view.choice.item(i).text()))
    assert isinstance(view.current, PdfReport)
    (page,) = [label for label in view.pages.findChildren(QLabel) if not label.pixmap().isNull()]
    shown = grab_pixels(page)
    white = (shown >= 250).all(axis=2).mean()
    dark = int((shown < 80).all(axis=2).sum())
    assert white > 0.9 and dark > 100  # a white page with the report's words on it

    assert pdf_pages(b"%PDF-1.4 not really") == []
    assert image_array(pdf_pages(reports.pdf_bytes("X"), width=200)[0]).shape[1] == 200
