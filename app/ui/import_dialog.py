"""Importing this site's own files or folders (File › Import files… / Import folder…): no patient
matching, unlike outside media. The vault reads, quarantines and audits; the dialog shows the
progress as a bar and a count, then what was imported and each file turned away, with its reason."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QPlainTextEdit,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from app.security.sessions import Session
from app.store.records import ImportReport
from app.ui.bridge import Bridge, in_background
from app.ui.forms import error_label, heading_label, hint_label, show_message
from app.vault import Vault


def choose_import_paths(parent: QWidget, *, folder: bool) -> list[Path]:
    """The files, or the folder, the user picks; empty when they cancel."""
    if folder:
        name = QFileDialog.getExistingDirectory(parent, "Import folder")
        return [Path(name)] if name else []
    names, _ = QFileDialog.getOpenFileNames(parent, "Import files", "", "All files (*);;DICOMDIR (DICOMDIR)")
    return [Path(n) for n in names]


def report_lines(report: ImportReport) -> list[str]:
    """The result as the CLI's `import` prints it: counts, then every file turned away and why."""
    lines = [f"Imported {report.imported} image(s) into {len(report.studies)} study(ies); "
             f"{report.duplicates} already here; {len(report.rejected)} quarantined."]
    lines += [f"Quarantined {r.path}: {r.reason}" for r in report.rejected]
    lines += [f"Warning: {w}" for w in report.warnings]
    return lines


class ImportProgress(QWidget):
    """A running import's bar and count, then its summary and every file turned away, with why;
    shared by this dialog and the outside-media one. ``report`` holds the result when done."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: ImportReport | None = None
        self.status = hint_label()
        self.bar = QProgressBar()
        self.bar.setFormat("%v of %m files")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Files that cannot be imported are listed here with the reason.")
        self.error = error_label()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.status, self.bar, self.details, self.error):
            layout.addWidget(widget)
        self.hide()  # until an import begins

    def begin(self, what: str) -> None:
        """Busy until the vault has counted the files."""
        self.report = None
        self.status.setText(f"Finding the files in {what}…")
        self.bar.setRange(0, 0)
        self.show()
        self.details.clear()
        show_message(self.error, "")

    def progress(self, done: int, total: int) -> None:
        if self.report is None:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
            self.status.setText(f"Importing: {done} of {total} file(s) read…")

    def finish(self, report: ImportReport | None, error: str | None) -> None:
        if report is None:
            self.status.setText("Nothing was imported.")
            show_message(self.error, error or "The import failed.")
            self.bar.setRange(0, 1)
            return
        self.report = report
        read = report.imported + report.duplicates + len(report.rejected)
        self.bar.setRange(0, max(read, 1))
        self.bar.setValue(read)
        lines = report_lines(report)
        self.status.setText(lines[0])
        self.details.setPlainText("\n".join(lines[1:]) or "Every file was imported or already here.")


class ImportDialog(QDialog):
    """Imports ``paths`` in the background once :meth:`start` is called; ``progress.report`` holds
    the result when it is done."""

    def __init__(self, vault: Vault, session: Session, paths: list[Path],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Custodian — Import")
        self.resize(720, 420)
        self._vault, self._session, self._paths = vault, session, paths
        self.progress = ImportProgress()
        self._progressed = Bridge(self.progress.progress, self)
        self._imported = Bridge(self._done, self)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(heading_label("Import", 1.3))
        layout.addWidget(hint_label("Nothing is copied to disk unencrypted. Damaged or non-DICOM files "
                                    "are quarantined, each with its reason."))
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)

    def start(self) -> None:
        """Import in the background; the bar and count follow the vault's progress."""
        vault, session, paths = self._vault, self._session, self._paths
        self.buttons.setEnabled(False)  # the import runs to its end (the lock still closes the dialog)
        self.progress.begin(paths[0].name if len(paths) == 1 else f"{len(paths)} files")
        in_background("import", lambda: vault.intake.import_paths(session, paths, self._progressed.post),
                      lambda report, error: self._imported.post(report, error))

    def _done(self, report: ImportReport | None, error: str | None) -> None:
        self.buttons.setEnabled(True)
        self.progress.finish(report, error)
