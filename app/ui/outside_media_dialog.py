"""Importing outside media at the film library: read the CD/USB/image, see what is on it, say who
the patient is here, import. The vault reads, reconciles, quarantines and audits."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError
from app.media.outside import Reconcile, Survey
from app.security.sessions import Session
from app.store.records import ImportReport
from app.ui.bridge import Bridge, in_background
from app.ui.forms import busy, error_label, heading_label, hint_label, password_edit, show_message
from app.ui.import_dialog import ImportProgress
from app.vault import Vault

COLUMNS = ("Patient", "ID (issuer)", "Date", "Modalities", "Description", "Images")


class OutsideMediaDialog(QDialog):
    """``report`` holds the import once it is done."""

    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Custodian — Import outside media")
        self.resize(820, 640)
        self._vault, self._session = vault, session
        self.survey: Survey | None = None
        self.progress = ImportProgress()
        self._progressed = Bridge(self.progress.progress, self)
        self._imported = Bridge(self._done, self)

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("Mounted CD or USB folder, DICOMDIR, .iso or .zip")
        folder, file = QPushButton("Folder…"), QPushButton("File…")
        folder.clicked.connect(lambda: self._choose(folder=True))
        file.clicked.connect(lambda: self._choose(folder=False))
        self.passphrase_edit = password_edit("The media's passphrase, if it is encrypted")
        self.read_button = QPushButton("Read media")
        self.read_button.clicked.connect(self.read_media)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeader().setStretchLastSection(True)
        self.local_choice = QRadioButton("The same patient is known here under the ID")
        self.local_edit = QLineEdit()
        self.outside_choice = QRadioButton("Keep the outside ID, issued by")
        self.issuer_edit = QLineEdit()
        self.outside_choice.setChecked(True)
        self.import_button = QPushButton("Import")
        self.import_button.setEnabled(False)
        self.import_button.clicked.connect(self.import_media)
        self.summary = hint_label()
        self.error = error_label()

        source = QHBoxLayout()
        source.addWidget(self.path_edit)
        source.addWidget(folder)
        source.addWidget(file)
        form = QFormLayout()
        form.addRow("Media", source)
        form.addRow("Passphrase", self.passphrase_edit)
        form.addRow("", self.read_button)
        reconcile = QFormLayout()
        reconcile.addRow(self.local_choice, self.local_edit)
        reconcile.addRow(self.outside_choice, self.issuer_edit)
        layout = QVBoxLayout(self)
        layout.addWidget(heading_label("Import outside media", 1.3))
        layout.addWidget(hint_label("Nothing is copied to disk unencrypted. Files that are not DICOM "
                                    "(viewers, web pages) are left alone; damaged DICOM files are "
                                    "quarantined."))
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addLayout(reconcile)
        layout.addWidget(self.error)
        layout.addWidget(self.summary)
        layout.addWidget(self.progress)
        layout.addWidget(self.import_button)

    def _choose(self, *, folder: bool) -> None:
        kinds = "Media (DICOMDIR *.iso *.zip);;All files (*)"
        name = QFileDialog.getExistingDirectory(self, "Media folder") if folder else \
            QFileDialog.getOpenFileName(self, "Media file", "", kinds)[0]
        if name:
            self.path_edit.setText(name)

    def _path(self) -> Path:
        return Path(self.path_edit.text().strip()).expanduser()

    def read_media(self) -> None:
        try:
            with busy():
                self.survey = self._vault.intake.survey_media(self._session, self._path(),
                                                       self.passphrase_edit.text() or None)
        except CustodianError as exc:
            show_message(self.error, str(exc))
            return
        show_message(self.error, "")
        studies = self.survey.studies
        self.table.setRowCount(len(studies))
        for row, s in enumerate(studies):
            values = (s.patient_name, s.patient_id + (f" ({s.issuer})" if s.issuer else ""), s.study_date,
                      ", ".join(sorted(s.modalities)), s.description, str(s.instances))
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.summary.setText(f"{len(studies)} study(ies), {sum(s.instances for s in studies)} image(s); "
                             f"{self.survey.unreadable} other file(s) not imported.")
        self.import_button.setEnabled(bool(studies))

    def import_media(self) -> None:
        local = self.local_choice.isChecked()
        chosen = (self.local_edit if local else self.issuer_edit).text().strip()
        if not chosen:
            show_message(self.error, "Enter the Patient ID this patient has here." if local else
                         "Enter who issued the outside Patient ID (the hospital or clinic the media "
                         "came from), or choose the local Patient ID instead.")
            return
        reconcile = Reconcile(chosen, "") if local else Reconcile("", chosen)
        show_message(self.error, "")
        self.import_button.setEnabled(False)
        vault, session, path = self._vault, self._session, self._path()
        passphrase = self.passphrase_edit.text() or None
        self.progress.begin(path.name)
        progress = self._progressed.post
        in_background("import-media", lambda: vault.intake.import_media(session, path, passphrase, reconcile,
                                                                        progress),
                      lambda report, error: self._imported.post(report, error))

    @property
    def report(self) -> ImportReport | None:
        """The import, once it is done."""
        return self.progress.report

    def _done(self, report: ImportReport | None, error: str | None) -> None:
        self.progress.finish(report, error)
        self.import_button.setEnabled(report is None)
