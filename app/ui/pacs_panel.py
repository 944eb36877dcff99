"""The PACS panel beside the local study list: search the site's PACS and retrieve into the cache.

Searches and retrieves run on a worker thread so the window stays responsive; their results come
back through a bridge. What the table shows is what the vault handed out for the reader's role
(hidden demographics arrive as None). The panel is cleared on auto-logoff like everything else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.net.query import RemoteStudy
from app.security.roles import Action, permits
from app.security.sessions import Session
from app.ui.bridge import Bridge, in_background
from app.ui.dicom_text import iso_date, person_name
from app.ui.forms import error_label, hint_label, link_button, show_message
from app.ui.node_dialog import DicomWebNodeDialog
from app.ui.study_list import UID_ROLE, Column, RecordTableModel, record_table, shown
from app.vault import Vault


class RemoteStudyModel(RecordTableModel):
    columns = (
        Column("Patient", lambda s: shown(s.patient_name, person_name),
               lambda s: (s.patient_name or "").casefold(), "Patient name"),
        Column("ID", lambda s: shown(s.patient_id), lambda s: s.patient_id or "", "Patient ID"),
        Column("Date", lambda s: iso_date(s.study_date), lambda s: s.study_date, "Study date"),
        Column("Mod.", lambda s: s.modalities.replace("\\", ", "), lambda s: s.modalities, "Modalities"),
        Column("Description", lambda s: s.description, lambda s: s.description.casefold(),
               "Study description", stretch=True),
        Column("Images", lambda s: "" if s.instances is None else str(s.instances),
               lambda s: s.instances or 0, "Instances at the PACS", numeric=True),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(lambda s: s.study_uid, parent)


class PacsPanel(QWidget):
    retrieved = Signal(str)  # a study UID now in the local cache

    def __init__(self, vault: Vault, session: Callable[[], Session | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self._session = session
        self._studies: list[RemoteStudy] = []
        self._busy = False
        self._worker: threading.Thread | None = None
        self._done = Bridge(self._finished, self)
        self._progress_bridge = Bridge(self._progress, self)

        self.node_label = hint_label()
        self.add_node_button = link_button("Add a DICOMweb node…")
        self.add_node_button.setToolTip("A PACS reached over DICOMweb (HTTPS), as 'custodian node add "
                                        "--dicomweb' adds one")
        self.add_node_button.hide()  # (shown to roles that may manage nodes)
        self.patient_edit = QLineEdit(placeholderText="Patient ID (* and ? allowed)")
        self.name_edit = QLineEdit(placeholderText="FAMILY^Given (* allowed)")
        self.date_edit = QLineEdit(placeholderText="YYYYMMDD or YYYYMMDD-YYYYMMDD")
        self.modality_edit = QLineEdit(placeholderText="CT, MR, …")
        self.search_button = QPushButton("Search PACS")
        self.search_button.setToolTip("Ask the PACS for matching studies (Enter)")
        self.retrieve_button = QPushButton("Retrieve")
        self.retrieve_button.setToolTip("Bring the selected study into the local cache")
        self.model = RemoteStudyModel(self)
        self.table = record_table(self.model, RemoteStudyModel.columns, "Studies at the PACS")
        self.progress = QProgressBar()
        self.progress.hide()
        self.error_label = error_label()
        self.summary = hint_label()

        form = QFormLayout()
        form.addRow("Patient ID", self.patient_edit)
        form.addRow("Name", self.name_edit)
        form.addRow("Date", self.date_edit)
        form.addRow("Modality", self.modality_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.search_button)
        buttons.addStretch(1)
        buttons.addWidget(self.retrieve_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.node_label)
        layout.addWidget(self.add_node_button)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        layout.addWidget(self.error_label)

        self.search_button.clicked.connect(self.search)
        self.retrieve_button.clicked.connect(self.retrieve)
        self.add_node_button.clicked.connect(self.add_dicomweb_node)
        for edit in (self.patient_edit, self.name_edit, self.date_edit, self.modality_edit):
            edit.returnPressed.connect(self.search)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_buttons())
        self.refresh_node()

    # ------------------------------------------------------------------ public
    def refresh_node(self) -> None:
        node = self._vault.nodes.pacs()
        self.node_label.setText(f"PACS: {node.name} ({node.describe()})" if node else
                                "No PACS node is set: an administrator adds one with 'custodian node add'.")
        self._update_buttons()

    def add_dicomweb_node(self) -> DicomWebNodeDialog | None:
        session = self._session()
        if session is None:
            return None
        dialog = DicomWebNodeDialog(self._vault, session, self)
        dialog.exec()
        self.refresh_node()
        return dialog

    def showEvent(self, event: QShowEvent) -> None:
        """Whether the reader may add nodes is asked as the panel shows (its window's session is
        set after the panel is made, and changes with switch user)."""
        session = self._session()
        self.add_node_button.setVisible(session is not None and permits(session.user.role,
                                                                        Action.MANAGE_NODES))
        super().showEvent(event)

    def clear(self) -> None:
        """Drop every result (auto-logoff, switch user)."""
        self._studies = []
        self.model.set_records([])
        for edit in (self.patient_edit, self.name_edit, self.date_edit, self.modality_edit):
            edit.clear()
        self.summary.clear()
        show_message(self.error_label, "")
        self._update_buttons()

    def search(self) -> None:
        node, session = self._vault.nodes.pacs(), self._session()
        if node is None or session is None or self._busy:
            return
        filters = {"patient_id": self.patient_edit.text().strip(),
                   "patient_name": self.name_edit.text().strip(),
                   "study_date": self.date_edit.text().strip(),
                   "modality": self.modality_edit.text().strip().upper()}
        self._run("search", lambda: self._vault.pacs.query(session, node.name, **filters))

    def retrieve(self) -> None:
        node, session, study = self._vault.nodes.pacs(), self._session(), self.selected()
        if node is None or session is None or study is None or self._busy:
            return
        self.progress.setRange(0, 0)
        self.progress.show()
        self._run("retrieve", lambda: (study.study_uid, self._vault.pacs.retrieve(
            session, node.name, study.study_uid, self._progress_bridge.post)))

    def selected(self) -> RemoteStudy | None:
        index = self.table.currentIndex()
        uid = index.data(UID_ROLE) if index.isValid() else None
        return next((s for s in self._studies if s.study_uid == uid), None)

    def wait(self, timeout: float = 60.0) -> None:
        """Until the running search or retrieve has reported (for tests and scripted use)."""
        if self._worker is not None:
            self._worker.join(timeout)

    # ------------------------------------------------------------------ plumbing
    def _run(self, kind: str, call: Callable[[], Any]) -> None:
        self._busy = True
        self._update_buttons()
        show_message(self.error_label, "")
        self.summary.setText("Asking the PACS…" if kind == "search" else "Retrieving…")
        self._worker = in_background(f"pacs-{kind}", call,
                                     lambda result, error: self._done.post(kind, result, error))

    def _progress(self, done: int, total: int | None) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _finished(self, kind: str, result: Any, error: str | None) -> None:
        self._busy = False
        self.progress.hide()
        if error is not None:
            self.summary.clear()
            show_message(self.error_label, error)
        elif kind == "search":
            self._show(result)
        else:
            study_uid, report = result
            self.summary.setText(report.summary())
            self.retrieved.emit(study_uid)
        self._update_buttons()

    def _show(self, studies: Sequence[RemoteStudy]) -> None:
        self._studies = list(studies)
        self.model.set_records(self._studies)
        self.summary.setText(f"{len(self._studies)} study(ies) at the PACS." if self._studies
                             else "No studies at the PACS match.")

    def _update_buttons(self) -> None:
        ready = not self._busy and self._vault.nodes.pacs() is not None
        self.search_button.setEnabled(ready)
        self.retrieve_button.setEnabled(ready and self.selected() is not None)

