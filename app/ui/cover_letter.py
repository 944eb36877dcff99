"""The export's cover letter on the printer the user picks: the passphrase on paper, sent apart
from the media. Nothing is written but what the printer (or the file the user chose) receives."""

from __future__ import annotations

from html import escape

from PySide6.QtGui import QTextDocument
from PySide6.QtPrintSupport import QPrintDialog, QPrinter
from PySide6.QtWidgets import QDialog, QWidget

from app.media.disclosures import Letter


def letter_document(letter: Letter) -> QTextDocument:
    """The letter laid out as the PDF one is: the passphrase large, monospaced and whole."""
    parts = [f"<h2>{escape(letter.title)}</h2>"]
    for paragraph in letter.paragraphs:
        parts.append(f"<p>{escape(paragraph)}</p>")
        if letter.emphasis and paragraph.endswith(":"):
            parts.append('<p align="center" style="font-family: monospace; font-size: 16pt; '
                         f'font-weight: bold">{escape(letter.emphasis)}</p>')
    document = QTextDocument()
    document.setHtml("".join(parts))
    return document


def print_letter(letter: Letter, printer: QPrinter) -> None:
    letter_document(letter).print_(printer)


def print_with_dialog(letter: Letter, parent: QWidget) -> bool:
    """Ask for the printer, then print; False when the user cancelled."""
    printer = QPrinter(QPrinter.PrinterMode.HighResolution)
    dialog = QPrintDialog(printer, parent)
    dialog.setWindowTitle("Print cover letter")
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return False
    print_letter(letter, printer)
    return True
