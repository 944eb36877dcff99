"""Printable documents (PDF): reports with a table, and one-page letters.

fpdf2's built-in fonts cover Latin-1; other characters print as '?'.
"""

from __future__ import annotations

from collections.abc import Sequence

PHI_FOOTER = "Contains protected health information: handle under the site's privacy policy."


def latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def tabular_pdf(title: str, header_lines: Sequence[str], columns: Sequence[str],
                rows: Sequence[Sequence[str]], widths: Sequence[float], *, landscape: bool = True,
                footer: str = PHI_FOOTER) -> bytes:
    from fpdf import FPDF  # only for PDF output; the rest of the core never needs it

    pdf = FPDF(orientation="L" if landscape else "P", format="A4")
    pdf.set_title(title)
    pdf.set_creator("Custodian")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 9, latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for line in header_lines:
        pdf.multi_cell(0, 5, latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 7)
    with pdf.table(col_widths=tuple(widths), text_align="LEFT", line_height=3.6,
                   first_row_as_headings=True, repeat_headings=1) as table:
        for values in [list(columns), *rows]:
            row = table.row()
            for value in values:
                row.cell(latin1(value))
    pdf.set_y(-14)
    pdf.set_font("Helvetica", "I", 7)
    pdf.cell(0, 5, footer)
    return bytes(pdf.output())


def letter_pdf(title: str, paragraphs: Sequence[str], *, emphasis: str = "") -> bytes:
    """A one-page letter; ``emphasis`` is printed large on its own (a passphrase to type)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_creator("Custodian")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 9, latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 11)
    for paragraph in paragraphs:
        pdf.multi_cell(0, 6, latin1(paragraph), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        if emphasis and paragraph.endswith(":"):
            pdf.set_font("Courier", "B", 16)
            pdf.multi_cell(0, 10, latin1(emphasis), new_x="LMARGIN", new_y="NEXT", align="C")
            pdf.set_font("Helvetica", "", 11)
            pdf.ln(3)
    return bytes(pdf.output())
