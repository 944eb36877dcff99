"""The privacy officer's audit viewer: filter the trail, verify it, export the two reports.

Every search and report goes through the vault, which checks the role and records the reading
in the trail itself. The records shown name patients by ID, so the window is a child of the
main window and closes with everything else on auto-logoff.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import cast

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.audit.events import EventType
from app.audit.report import AuditQuery, AuditRecord, ReportKind
from app.errors import CustodianError
from app.security.sessions import Session
from app.ui.forms import busy, error_label, heading_label, hint_label, show_message
from app.ui.study_list import Column, RecordTableModel, record_table
from app.vault import Vault

LIMIT = 5000


class AuditTableModel(RecordTableModel):
    columns = (
        Column("Seq", lambda r: str(r.seq), lambda r: r.seq, "Sequence number in the hash chain",
               numeric=True),
        Column("Local time", lambda r: f"{r.at.astimezone():%Y-%m-%d %H:%M:%S}", lambda r: r.seq),
        Column("Event", lambda r: r.type, lambda r: r.type),
        Column("Outcome", lambda r: r.outcome_text, lambda r: r.outcome),
        Column("User", lambda r: r.user or "", lambda r: r.user or ""),
        Column("Patients", lambda r: " ".join(r.patients), lambda r: r.patients, "By Patient ID"),
        Column("Detail", AuditRecord.detail_text, AuditRecord.detail_text, stretch=True),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(lambda r: str(r.seq), parent)


def _date_edit(value: QDate) -> QDateEdit:
    edit = QDateEdit(value)
    edit.setCalendarPopup(True)
    edit.setDisplayFormat("yyyy-MM-dd")
    return edit


class AuditViewer(QDialog):
    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._session = session
        self.setWindowTitle("Custodian — Audit trail")
        self.resize(1100, 640)

        self.user_edit = QLineEdit(placeholderText="any user")
        self.patient_edit = QLineEdit(placeholderText="any patient (Patient ID)")
        self.type_box = QComboBox()
        self.type_box.addItem("All events", None)
        for event_type in EventType:
            self.type_box.addItem(event_type.value, event_type.value)
        today = QDate.currentDate()
        self.from_edit = _date_edit(today.addDays(-30))
        self.to_edit = _date_edit(today)
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.setToolTip("Show the events that match (Enter)")

        filters = QFormLayout()
        who = QHBoxLayout()
        who.addWidget(self.user_edit)
        who.addWidget(self.patient_edit)
        who.addWidget(self.type_box)
        when = QHBoxLayout()
        when.addWidget(self.from_edit)
        when.addWidget(hint_label("to"))
        when.addWidget(self.to_edit)
        when.addStretch(1)
        when.addWidget(self.search_button)
        filters.addRow("Who / what", who)
        filters.addRow("From (local dates)", when)

        self.model = AuditTableModel(self)
        self.table = record_table(self.model, AuditTableModel.columns, "Audit events, newest first")
        self.summary = hint_label()
        self.error_label = error_label()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.verify_button = buttons.addButton("Verify trail", QDialogButtonBox.ButtonRole.ActionRole)
        self.verify_button.setToolTip("Re-check the hash chain and its signed checkpoints")
        self.patient_report_button = buttons.addButton("Patient access report…",
                                                       QDialogButtonBox.ButtonRole.ActionRole)
        self.patient_report_button.setToolTip("Who accessed the patient in the Patient ID box, as CSV or PDF")
        self.user_report_button = buttons.addButton("User activity report…",
                                                    QDialogButtonBox.ButtonRole.ActionRole)
        self.user_report_button.setToolTip("What the user in the user box did, as CSV or PDF")
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(heading_label("Audit trail", 1.3))
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

        self.search_button.clicked.connect(self.search)
        for edit in (self.user_edit, self.patient_edit):
            edit.returnPressed.connect(self.search)
            edit.textChanged.connect(self._update_buttons)
        self.verify_button.clicked.connect(self.verify)
        self.patient_report_button.clicked.connect(lambda: self.export(ReportKind.PATIENT))
        self.user_report_button.clicked.connect(lambda: self.export(ReportKind.USER))
        self._update_buttons()

    def query(self) -> AuditQuery:
        # (a QDate's toPython() is a date; PySide6's stubs say only object)
        first, last = cast(date, self.from_edit.date().toPython()), cast(date, self.to_edit.date().toPython())
        since = datetime.combine(first, time()).astimezone()
        until = datetime.combine(last + timedelta(days=1), time()).astimezone()
        event = self.type_box.currentData()
        return AuditQuery(user=self.user_edit.text().strip() or None,
                          patient=self.patient_edit.text().strip() or None,
                          event_type=EventType(event) if event else None,
                          since=since, until=until, limit=LIMIT)

    def search(self) -> None:
        try:
            with busy():
                records = self._vault.trail.show(self._session, self.query())
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return
        show_message(self.error_label, "")
        self.model.set_records(records)
        more = f" (the newest {LIMIT}; narrow the search for older ones)" if len(records) == LIMIT else ""
        self.summary.setText(f"{len(records)} event(s){more}.")

    def verify(self) -> None:
        try:
            with busy():
                report = self._vault.trail.verify(self._session)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return
        show_message(self.error_label, "" if report.ok else
                     f"The audit trail is damaged: the chain breaks at event {report.first_bad_seq}.")
        if report.ok:
            self.summary.setText(f"Audit trail intact: {report.events} event(s), "
                                 f"{report.checkpoints} signed checkpoint(s).")

    def export(self, kind: ReportKind) -> None:
        edit = self.patient_edit if kind is ReportKind.PATIENT else self.user_edit
        subject = edit.text().strip()
        suggested = f"{kind.value.replace(' ', '-')}-{subject}.pdf"
        path, _ = QFileDialog.getSaveFileName(self, f"Save the {kind.value} report", suggested,
                                              "PDF (*.pdf);;CSV (*.csv)")
        if path:
            self.save_report(kind, Path(path))

    def save_report(self, kind: ReportKind, path: Path) -> None:
        try:
            with busy():
                report = self._vault.trail.report(self._session, kind, self.query())
                report.write(path)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return
        show_message(self.error_label, "")
        self.summary.setText(f"{report.title}: {len(report.records)} event(s) written to {path.name}.")

    def _update_buttons(self) -> None:
        self.patient_report_button.setEnabled(bool(self.patient_edit.text().strip()))
        self.user_report_button.setEnabled(bool(self.user_edit.text().strip()))
