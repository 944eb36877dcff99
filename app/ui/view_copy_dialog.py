"""Copy or save the image in the active viewport, as the disclosure it is.

The dialog asks what the accounting of disclosures needs (recipient, purpose, identity check) and
the reader's authenticator code; the vault renders the image, refuses or records it
(:meth:`DisclosureService.copy_view`), and only then does the image reach the clipboard.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QLineEdit, QWidget

from app.media.disclosures import IdentityCheck, Purpose, RecipientKind
from app.media.view_copy import ViewCopy
from app.security.sessions import Session
from app.ui.export_pages import IDENTITY, PURPOSES, RECIPIENTS
from app.ui.forms import FormDialog, code_edit
from app.ui.image_view import ImageView
from app.vault import Vault


def _combo(choices: dict, chosen: object) -> QComboBox:
    box = QComboBox()
    for value, text in choices.items():
        box.addItem(text, value)
    box.setCurrentIndex(box.findData(chosen))
    return box


class ViewCopyDialog(FormDialog):
    """Copies (``out`` None) or saves as ``out`` the frame ``view`` shows, once the vault allows it."""

    def __init__(self, vault: Vault, session: Session, view: ImageView, series_uid: str,
                 out: Path | None = None, parent: QWidget | None = None) -> None:
        verb = "Save" if out is not None else "Copy"
        super().__init__(f"{verb} image", f"{verb} this image as a disclosure",
                         "An image that leaves the workstation is a disclosure: it is recorded in the "
                         "patient's accounting of disclosures, like exported media. It leaves de-identified "
                         "(no corner text, no overlays) unless you choose identified.", verb, parent=parent)
        self._vault, self._session, self._view = vault, session, view
        self._series_uid, self._out = series_uid, out
        self.recipient_kind = _combo(RECIPIENTS, RecipientKind.PROVIDER)
        self.purpose = _combo(PURPOSES, Purpose.TEACHING)
        self.identity = _combo(IDENTITY, IdentityCheck.KNOWN_TO_STAFF)
        self.identified = QCheckBox("Identified (keeps overlays and burnt-in details)")
        self.form.addRow("Recipient type", self.recipient_kind)
        self.recipient = self.add_field("Recipient", QLineEdit(placeholderText="Person or organisation"))
        self.form.addRow("Purpose", self.purpose)
        self.reference = self.add_field("Reference", QLineEdit(
            placeholderText="Authorization or order reference, if one applies"), required=False)
        self.form.addRow("Identity checked by", self.identity)
        self.form.addRow("", self.identified)
        self.code = self.add_field("Authenticator code", code_edit(), code=True)

    def submit(self) -> bool:
        view = self._view
        if view.series is None:
            self.refuse("The viewport no longer shows an image.")
            return False
        sop_uid, frame = view.series.frame_of(view.index)
        copy = ViewCopy(self._series_uid, sop_uid, frame, view.chosen_window, view.inverted,
                        RecipientKind(self.recipient_kind.currentData()), self.recipient.text(),
                        Purpose(self.purpose.currentData()), IdentityCheck(self.identity.currentData()),
                        self.reference.text(), self.identified.isChecked(),
                        self._out)
        data = self._vault.disclosure.copy_view(self._session, copy, self.code.text().strip())
        if self._out is None:
            QApplication.clipboard().setImage(QImage.fromData(data))
        return True
