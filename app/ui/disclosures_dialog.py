"""The accounting of disclosures (HIPAA 164.528) for one patient: what left on media, to whom,
why, and the PDF to give the patient."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError
from app.media.disclosures import Accounting
from app.security.sessions import Session
from app.ui.forms import busy, error_label, heading_label, hint_label, show_message
from app.vault import Vault


class DisclosuresDialog(QDialog):
    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Custodian — Accounting of disclosures")
        self.resize(900, 480)
        self._vault, self._session = vault, session
        self.accounting: Accounting | None = None
        self.patient_edit = QLineEdit()
        self.patient_edit.setPlaceholderText("Patient ID")
        self.patient_edit.returnPressed.connect(self.show_patient)
        show = QPushButton("Show")
        show.clicked.connect(self.show_patient)
        self.pdf_button = QPushButton("Save PDF for the patient…")
        self.pdf_button.setEnabled(False)
        self.pdf_button.clicked.connect(self._save_pdf)
        self.table = QTableWidget(0, len(Accounting.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(Accounting.COLUMNS))
        self.table.horizontalHeader().setStretchLastSection(True)
        self.summary = hint_label()
        self.error = error_label()
        row = QHBoxLayout()
        row.addWidget(self.patient_edit)
        row.addWidget(show)
        row.addWidget(self.pdf_button)
        layout = QVBoxLayout(self)
        layout.addWidget(heading_label("Accounting of disclosures", 1.3))
        layout.addWidget(hint_label("Media made for this patient in the last six years: recipient, purpose "
                                    "and what was disclosed. Looking it up is recorded in the audit trail."))
        layout.addLayout(row)
        layout.addWidget(self.error)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)

    def show_patient(self) -> None:
        patient_id = self.patient_edit.text().strip()
        if not patient_id:
            return
        try:
            with busy():
                found = self._vault.disclosure.disclosures(self._session, patient_id)
        except CustodianError as exc:
            show_message(self.error, str(exc))
            return
        show_message(self.error, "")
        self.accounting = Accounting(patient_id, found, self._session.user.name, datetime.now(UTC))
        rows = self.accounting.rows()
        self.table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.summary.setText(self.accounting.header_lines()[1])
        self.pdf_button.setEnabled(True)

    def _save_pdf(self) -> None:
        if self.accounting is None:
            return
        suggested = str(Path.home() / "accounting-of-disclosures.pdf")
        name, _ = QFileDialog.getSaveFileName(self, "Save accounting of disclosures", suggested,
                                              "PDF (*.pdf)")
        if name:
            Path(name).write_bytes(self.accounting.to_pdf())
