"""Adding a DICOMweb node at the workstation, as ``custodian node add NAME --dicomweb URL`` does: the
base URL, the site CA its HTTPS certificate must chain to, and HTTP basic or a bearer token. The
password or token goes to the vault's node book (encrypted, with the node) and leaves the form as
soon as it is stored; the node is then echoed and the answer said in the same words as ``node echo``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget

from app.errors import CustodianError, UsageError
from app.net.nodes import Node
from app.security.sessions import Session
from app.ui.forms import FormDialog, busy, hint_label, password_edit, show_message
from app.vault import Vault

AUTHENTICATION = (("None", ""), ("HTTP basic: user and password", "basic"), ("Bearer token", "bearer"))


def echoed(node: str, ms: float) -> str:
    """The echo's answer, as ``custodian node echo`` says it."""
    return f"PACS node '{node}' answered in {ms:.0f} ms."


class DicomWebNodeDialog(FormDialog):
    """Stays open after "Add and test" to show the node set and its echo; ``added`` is the node
    once the vault holds it (an echo that fails leaves the form to correct, and adding again
    replaces it)."""

    def __init__(self, vault: Vault, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("Custodian — Add DICOMweb node", "Add a DICOMweb node",
                         "The PACS's DICOMweb base URL (QIDO-RS, WADO-RS, STOW-RS), the CA its HTTPS "
                         "certificate must chain to, and how it authenticates. A password or token is "
                         "kept encrypted in the vault and not shown again.", "Add and test", parent=parent)
        self._vault = vault
        self._session = session
        self.added: Node | None = None
        self.name_edit = self.add_field("Name", QLineEdit(placeholderText="e.g. pacs-web"))
        self.name_edit.setToolTip("1–32 letters, digits, dots, dashes or underscores")
        self.url_edit = self.add_field("URL", QLineEdit(placeholderText="https://pacs.hospital.example/dicom-web"))
        self.ca_edit = QLineEdit(placeholderText="The site CA (PEM); empty: the system's CAs")
        choose = QPushButton("Choose…")
        choose.setAutoDefault(False)
        choose.clicked.connect(self._choose_ca)
        row = QHBoxLayout()
        row.addWidget(self.ca_edit, 1)
        row.addWidget(choose)
        self.form.addRow("CA file", row)
        self.auth_box = QComboBox()
        for text, value in AUTHENTICATION:
            self.auth_box.addItem(text, value)
        self.form.addRow("Authentication", self.auth_box)
        self.user_edit = QLineEdit()
        self.form.addRow("User", self.user_edit)
        self.secret_edit = password_edit("The password (HTTP basic) or the token")
        self.form.addRow("Password or token", self.secret_edit)
        self.result_label = hint_label()
        self.result_label.hide()
        self.body.addWidget(self.result_label)
        self.auth_box.currentIndexChanged.connect(self._auth_changed)
        self._auth_changed()

    def submit(self) -> bool:
        if self.added is not None:
            return True  # "Done"
        node = self._node()
        with busy():
            self._vault.nodes.add(self._session, node)
        self.secret_edit.clear()  # it is in the vault now
        said = f"PACS node '{node.name}' set: {node.describe()}."
        try:
            with busy():
                result = self._vault.nodes.echo(self._session, node.name)
        except CustodianError as exc:
            self.refuse(f"{said} The echo failed: {exc} Correct the form and add it again to replace it.")
            return False
        self.added = node
        show_message(self.error_label, "")
        show_message(self.result_label, f"{said} {echoed(node.name, result.ms)}")
        for field in (self.name_edit, self.url_edit, self.ca_edit, self.auth_box, self.user_edit,
                      self.secret_edit):
            field.setEnabled(False)
        self.ok_button.setText("Done")
        return False

    def _node(self) -> Node:
        auth = str(self.auth_box.currentData())
        ca = self.ca_edit.text().strip()
        try:
            pem = Path(ca).expanduser().read_text(encoding="ascii") if ca else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"Could not read the CA file {ca}: {getattr(exc, 'strerror', None) or exc}."
                             ) from None
        return Node.web(self.name_edit.text().strip(), self.url_edit.text(), web_ca=pem, auth=auth,
                        user=self.user_edit.text().strip() if auth == "basic" else "",
                        secret=self.secret_edit.text() if auth else "")

    def _auth_changed(self) -> None:
        auth = self.auth_box.currentData()
        self.user_edit.setEnabled(auth == "basic")
        self.secret_edit.setEnabled(bool(auth))

    def _choose_ca(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The site CA", "",
                                              "PEM certificates (*.pem *.crt);;All files (*)")
        if path:
            self.ca_edit.setText(path)

    def done(self, result: int) -> None:
        self.secret_edit.clear()  # however the dialog closes
        super().done(result)
