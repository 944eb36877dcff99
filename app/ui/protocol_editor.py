"""The hanging protocol editor: the site's protocols and the reader's own, each a match (what
studies it hangs) and a layout with what each viewport shows.

A reader edits their own; an administrator the site's, and reads in or writes out the file IT signs
to share them. Those the signed site policy sets are shown, never changed. The vault checks every
definition and says plainly what is wrong with one.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError
from app.imaging.display import CT_PRESETS
from app.imaging.hanging import LAYOUTS
from app.imaging.protocols import NTH_MAX, PRIORS_MAX, STUDIES, Match, Protocol, Scope, SeriesRule
from app.security.roles import Action, permits
from app.security.sessions import Session
from app.ui.forms import error_label, hint_label, show_message
from app.vault import Vault

COLUMNS = ("Study", "Modality", "Series description", "Nth that fits", "Window preset")
OWN_PRESET = "(series' own)"


def label(protocol: Protocol) -> str:
    whose = "site policy" if protocol.managed else "site" if protocol.scope == Scope.SITE else "mine"
    return f"{protocol.name} ({whose})"


class ProtocolEditor(QDialog):
    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hanging protocols")
        self._vault, self._session = vault, session
        self._scopes = [scope for scope, action in ((Scope.USER, Action.VIEW_IMAGES),
                                                     (Scope.SITE, Action.SITE_POLICY))
                        if permits(session.user.role, action)]
        self.protocols: list[Protocol] = []
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self._chosen)
        self.name, self.modalities = QLineEdit(), QLineEdit(placeholderText="CT, MR (empty: any)")
        self.body_part = QLineEdit(placeholderText="CHEST, or a pattern such as *SPINE* (empty: any)")
        self.description = QLineEdit(placeholderText="part of the study description, or a pattern")
        self.scope = QComboBox()
        self.min_priors = QSpinBox(maximum=PRIORS_MAX)
        self.max_priors = QSpinBox(minimum=-1, maximum=PRIORS_MAX)
        self.max_priors.setSpecialValueText("any")
        self.max_priors.setValue(-1)
        self.layout_box = QComboBox()
        self.layout_box.addItems(list(LAYOUTS))
        self.layout_box.currentTextChanged.connect(self._fit_rows)
        self.sync = QCheckBox("Synchronise scrolling")
        self.sync.setChecked(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.error_label = error_label()
        self._build()
        self.reload()
        self.new()

    def _build(self) -> None:
        form = QFormLayout()
        for text, field in (("Name", self.name), ("Kept for", self.scope), ("Modalities", self.modalities),
                            ("Body part", self.body_part), ("Study description", self.description),
                            ("Fewest priors", self.min_priors), ("Most priors", self.max_priors),
                            ("Layout", self.layout_box), ("", self.sync)):
            form.addRow(text, field)
        buttons = QHBoxLayout()
        for text, slot in (("New", self.new), ("Save", self.save), ("Delete", self.delete)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        if Scope.SITE in self._scopes:
            for text, slot in (("Read in signed…", self.import_signed),
                               ("Write out for signing…", self.export)):
                button = QPushButton(text)
                button.clicked.connect(lambda _=False, slot=slot: slot())
                buttons.addWidget(button)
        right = QVBoxLayout()
        right.addLayout(form)
        right.addWidget(hint_label("Each row is a viewport, row by row across the layout: which series "
                                   "of the study (or of its most relevant prior) it shows."))
        right.addWidget(self.table, 1)
        right.addWidget(self.error_label)
        right.addLayout(buttons)
        row = QHBoxLayout(self)
        row.addWidget(self.list, 1)
        row.addLayout(right, 3)
        self.resize(960, 560)

    def reload(self, select: str | None = None) -> None:
        try:
            self.protocols = self._vault.protocols.protocols(self._session)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems([label(p) for p in self.protocols])
        self.list.blockSignals(False)
        names = [p.name for p in self.protocols]
        if select in names:
            self.list.setCurrentRow(names.index(select))

    # ------------------------------------------------------------------ the form
    def new(self) -> None:
        self.list.setCurrentRow(-1)
        self._show(Protocol("New protocol", self._scopes[0] if self._scopes else Scope.USER))

    def _chosen(self, row: int) -> None:
        if 0 <= row < len(self.protocols):
            self._show(self.protocols[row])

    def _show(self, protocol: Protocol) -> None:
        show_message(self.error_label, "")
        self.name.setText(protocol.name)
        shown = self._scopes if protocol.scope in self._scopes else [*self._scopes, protocol.scope]
        self.scope.clear()  # (a protocol this user may not change shows its own scope, greyed)
        self.scope.addItems([s.value for s in shown])
        self.scope.setCurrentText(protocol.scope.value)
        self.modalities.setText(", ".join(protocol.match.modalities))
        self.body_part.setText(protocol.match.body_part)
        self.description.setText(protocol.match.description)
        self.min_priors.setValue(protocol.match.min_priors)
        self.max_priors.setValue(-1 if protocol.match.max_priors is None else protocol.match.max_priors)
        self.sync.setChecked(protocol.sync)
        self.layout_box.setCurrentText(protocol.layout)
        self.table.setRowCount(0)
        self._fit_rows(protocol.layout, protocol.viewports)
        editable = not protocol.managed and protocol.scope in self._scopes
        for widget in (self.name, self.scope, self.modalities, self.body_part, self.description,
                       self.min_priors, self.max_priors, self.layout_box, self.sync, self.table):
            widget.setEnabled(editable)

    def _fit_rows(self, layout: str, rules: tuple[SeriesRule, ...] = ()) -> None:
        """One row per viewport of ``layout``; new rows show the next series of the study."""
        rows, cols = LAYOUTS[layout]
        had = self.table.rowCount()
        self.table.setRowCount(rows * cols)
        for row in range(had, rows * cols):
            rule = rules[row] if row < len(rules) else SeriesRule(nth=min(row + 1, NTH_MAX),
                                                                 study="current" if not rules else "none")
            study, preset, nth = QComboBox(), QComboBox(), QSpinBox(minimum=1, maximum=NTH_MAX)
            study.addItems(list(STUDIES))
            study.setCurrentText(rule.study)
            preset.addItems([OWN_PRESET, *CT_PRESETS])
            preset.setCurrentText(rule.preset or OWN_PRESET)
            nth.setValue(rule.nth)
            self.table.setCellWidget(row, 0, study)
            self.table.setItem(row, 1, QTableWidgetItem(rule.modality))
            self.table.setItem(row, 2, QTableWidgetItem(rule.description))
            self.table.setCellWidget(row, 3, nth)
            self.table.setCellWidget(row, 4, preset)

    def _rules(self) -> tuple[SeriesRule, ...]:
        rules = []
        for row in range(self.table.rowCount()):
            study, nth, preset = (self.table.cellWidget(row, c) for c in (0, 3, 4))
            modality, description = (self.table.item(row, c) for c in (1, 2))
            assert isinstance(study, QComboBox) and isinstance(nth, QSpinBox)
            assert isinstance(preset, QComboBox)
            window = "" if preset.currentText() == OWN_PRESET else preset.currentText()
            rules.append(SeriesRule(modality.text() if modality else "",
                                    description.text() if description else "", study.currentText(),
                                    nth.value(), window))
        while rules and rules[-1].study == "none":
            rules.pop()  # (viewports left empty at the end need no rule)
        return tuple(rules)

    def protocol(self) -> Protocol:
        """The form as a protocol; UsageError says what is wrong with it."""
        match = Match(tuple(m for m in self.modalities.text().replace(",", " ").split()),
                      self.body_part.text(), self.description.text(), self.min_priors.value(),
                      None if self.max_priors.value() < 0 else self.max_priors.value())
        return Protocol(self.name.text(), Scope(self.scope.currentText() or Scope.USER.value), match,
                        self.layout_box.currentText(), self._rules(), self.sync.isChecked())

    # ------------------------------------------------------------------ the vault
    def save(self) -> bool:
        try:
            protocol = self.protocol()
            service = self._vault.protocols
            (service.save_site if protocol.scope == Scope.SITE else service.save)(self._session, protocol)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return False
        self.reload(select=protocol.name)
        return True

    def delete(self) -> bool:
        row = self.list.currentRow()
        if not 0 <= row < len(self.protocols):
            show_message(self.error_label, "Choose the protocol to delete in the list first.")
            return False
        chosen = self.protocols[row]
        service = self._vault.protocols
        try:
            remove = service.remove_site if chosen.scope == Scope.SITE else service.remove
            remove(self._session, chosen.name)
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return False
        self.reload()
        self.new()
        return True

    def import_signed(self, path: Path | None = None) -> bool:
        """Replace the site's protocols on this station with those of a file the site signed."""
        if path is None:
            name, _ = QFileDialog.getOpenFileName(self, "Read in signed hanging protocols", "",
                                                  "Signed site file (*.json)")
            if not name:
                return False
            path = Path(name)
        try:
            read = self._vault.protocols.import_signed(self._session, path.read_bytes())
        except OSError as exc:
            show_message(self.error_label, f"The file could not be read: {exc.strerror}.")
            return False
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return False
        show_message(self.error_label, "")
        self.reload(select=read[0].name if read else None)
        return True

    def export(self, path: Path | None = None) -> bool:
        """The site's protocols as settings for IT to sign (``custodian policy sign``)."""
        if path is None:
            name, _ = QFileDialog.getSaveFileName(self, "Write out hanging protocols for signing",
                                                  "hanging-protocols.json", "Settings to sign (*.json)")
            if not name:
                return False
            path = Path(name)
        try:
            path.write_text(self._vault.protocols.export_site(self._session))
        except OSError as exc:
            show_message(self.error_label, f"The file could not be written: {exc.strerror}.")
            return False
        except CustodianError as exc:
            show_message(self.error_label, str(exc))
            return False
        return True
