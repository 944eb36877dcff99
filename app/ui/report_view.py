"""The study's reports beside its images: a structured report as formatted text (headings bold,
measurements with their units, cited images as links that open in the active viewport) and an
encapsulated PDF drawn page by page by Qt's PDF module from memory, never from a file.

The reports come from the vault (:meth:`ReadingService.reports`), which checks the role, blanks
the header as minimum necessary asks and records the access; this dialog only displays them.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtPdf import QPdfDocument
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QScrollArea,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.imaging.report import Item, Report, StructuredReport, shown_unit
from app.store.records import SeriesSummary
from app.vault import Vault

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

REPORT_MODALITIES = frozenset({"SR", "DOC"})  # the series a report arrives in
PAGE_WIDTH = 820  # pixels a PDF page is drawn at
CITED = "image"  # the scheme of a link to a cited image: image:<SOP Instance UID>


def image_series(series: Iterable[SeriesSummary]) -> list[SeriesSummary]:
    """The series a viewport can hang: not those of reports, nor presentation states (PR: they are
    chosen in a viewport, app.ui.presentation_states), nor key images (KO: the study's own images,
    opened from the series strip or list)."""
    return [each for each in series if each.modality not in {*REPORT_MODALITIES, "PR", "KO"}]


def report_html(report: StructuredReport) -> str:
    """The report as HTML for a text view: the header, then each heading over its items."""
    head = report.header
    patient = " · ".join(html.escape(part) for part in (head.patient_name, head.patient_id, head.birth_date,
                                                         head.sex) if part)
    lines = [f"<h2>{html.escape(head.title)}</h2>",
             f"<p>{html.escape(head.kind)} · {html.escape(head.date or 'undated')}"
             f"{' · ' + patient if patient else ''}</p>",
             f"<p><i>{html.escape(report.completion or '—')}, "
             f"{html.escape(report.verification or '—')}</i></p>"]
    return "\n".join(lines + _item_html(report.root, 0))


def _item_html(item: Item, depth: int) -> list[str]:
    margin = f'style="margin-left:{18 * depth}px; margin-top:2px; margin-bottom:2px"'
    if item.value_type == "CONTAINER":
        lines = [f"<p {margin}><b>{html.escape(item.concept)}</b></p>"] if item.concept else []
        inner = depth + 1 if item.concept else depth
    else:
        value = html.escape(" ".join(filter(None, (item.value, shown_unit(item.units)))))
        if item.value_type == "NUM":
            value = f"<b>{value}</b>"
        links = ", ".join(f'<a href="{CITED}:{html.escape(uid)}">open image</a>' for uid in item.references)
        label = html.escape(item.concept or item.value_type.capitalize())
        text = "<br>".join(value.splitlines()) or "—"
        lines = [f"<p {margin}>{label}: {text}{' — ' + links if links else ''}</p>"]
        inner = depth + 1
    return lines + [line for child in item.children for line in _item_html(child, inner)]


def pdf_pages(data: bytes, width: int = PAGE_WIDTH) -> list[QImage]:
    """The document's pages drawn on white, ``width`` pixels wide; read from memory (a QBuffer),
    so the decrypted report never touches the disk. Empty if Qt cannot open it."""
    array = QByteArray(data)
    buffer = QBuffer(array)
    buffer.open(QIODevice.OpenModeFlag.ReadOnly)
    document = QPdfDocument()
    document.load(buffer)
    pages = []
    if document.status() == QPdfDocument.Status.Ready:
        for page in range(document.pageCount()):
            points = document.pagePointSize(page)
            size = QSize(width, round(width * points.height() / max(points.width(), 1.0)))
            drawn = document.render(page, size)
            sheet = QImage(size, QImage.Format.Format_RGB32)
            sheet.fill(QColor("white"))  # (a page's background is transparent where nothing is drawn)
            with QPainter(sheet) as painter:
                painter.drawImage(0, 0, drawn)
            pages.append(sheet)
    document.close()
    buffer.close()
    return pages


class ReportView(QDialog):
    """The reports of one study: a list on the left when there are several, the chosen one beside."""

    imageChosen = Signal(str, str)  # series UID, SOP Instance UID of a cited image
    unplaced = Signal(str)  # why a cited image cannot be opened

    def __init__(self, reports: list[Report], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Reports")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # the reports go with it
        self.resize(900, 760)
        self._reports = reports
        self.choice = QListWidget()
        self.choice.addItems([f"{r.header.title}\n{r.header.kind} · {r.header.date}" for r in reports])
        self.choice.setVisible(len(reports) > 1)
        self.choice.setMaximumWidth(240)
        self.text = QTextBrowser()
        self.text.setOpenLinks(False)
        self.text.anchorClicked.connect(self._followed)
        self.pages = QWidget()
        self._page_list = QVBoxLayout(self.pages)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.pages)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.text)
        self.stack.addWidget(scroll)
        row = QHBoxLayout(self)
        row.addWidget(self.choice)
        row.addWidget(self.stack, 1)
        self.choice.currentRowChanged.connect(self.show_report)
        self.choice.setCurrentRow(0)

    @property
    def current(self) -> Report:
        return self._reports[max(self.choice.currentRow(), 0)]

    def show_report(self, index: int) -> None:
        report = self._reports[index]
        layout = self._page_list
        while (taken := layout.takeAt(0)) is not None:
            if (widget := taken.widget()) is not None:
                widget.deleteLater()
        if isinstance(report, StructuredReport):
            self.text.setHtml(report_html(report))
            self.stack.setCurrentIndex(0)
            return
        pages = pdf_pages(report.data)
        for page in pages:
            label = QLabel()
            label.setPixmap(QPixmap.fromImage(page))
            layout.addWidget(label)
        if not pages:
            layout.addWidget(QLabel("This PDF report could not be opened: its document is damaged."))
        self.stack.setCurrentIndex(1)

    def _followed(self, url: QUrl) -> None:
        report = self.current
        if url.scheme() != CITED or not isinstance(report, StructuredReport):
            return
        sop_uid = url.path()
        series_uid = report.evidence.get(sop_uid)
        if series_uid:
            self.imageChosen.emit(series_uid, sop_uid)
        else:
            self.unplaced.emit("The report does not name the series of this image, so it cannot be opened.")


def open_reports(window: MainWindow, vault: Vault, study_uid: str, series_uid: str = "") -> ReportView | None:
    """The study's reports in a dialog beside the window, the one of ``series_uid`` first shown
    (None when the vault said why not)."""
    found = window.ask(vault.reading.reports, window.session, study_uid)
    if found is None:
        return None
    if not found:
        window.show_error("This study has no report that can be shown.")
        return None
    view = ReportView(found, window)
    view.choice.setCurrentRow(next((i for i, r in enumerate(found) if r.header.series_uid == series_uid), 0))
    view.imageChosen.connect(lambda series_uid, sop_uid: show_cited(window, series_uid, sop_uid))
    view.unplaced.connect(window.show_error)
    view.show()
    return view


def show_cited(window: MainWindow, series_uid: str, sop_uid: str) -> bool:
    """Open a cited image's series in the active viewport, at that image."""
    viewport = window.grid.active
    if viewport.series_uid != series_uid and not window.load_series(series_uid, viewport):
        return False
    series = viewport.view.series
    at = [i for i in range(len(series)) if series.frame_of(i)[0] == sop_uid] if series is not None else []
    index = at[0] if at else None
    if index is None:
        window.show_error("The cited image is not in its series in the cache.")
        return False
    viewport.view.set_index(index)
    return True
