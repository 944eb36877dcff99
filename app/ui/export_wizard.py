"""The film library's export wizard: studies → recipient → purpose → identity check → media →
confirm with the authenticator → the passphrase, shown once.

Every rule (role, business associate agreement, de-identification, size limit) is the vault's;
a refusal is shown on the confirmation page in the vault's own words and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app.errors import CustodianError
from app.media.deid import DeidOptions
from app.media.disclosures import (
    Delivery,
    ExportRequest,
    ExportResult,
    IdentityCheck,
    MediaKind,
    Purpose,
    RecipientKind,
    cover_letter,
)
from app.security.sessions import Session
from app.store.records import StudySummary
from app.ui.bridge import Bridge, in_background
from app.ui.forms import code_edit, error_label, hint_label, show_message
from app.vault import Vault

RECIPIENTS = {RecipientKind.PATIENT: "The patient or their personal representative",
              RecipientKind.PROVIDER: "Another provider (treatment)",
              RecipientKind.THIRD_PARTY: "Attorney or other third party (with authorization)",
              RecipientKind.BUSINESS_ASSOCIATE: "Business associate (agreement required)"}
PURPOSES = {Purpose.PATIENT_REQUEST: "The patient's own request", Purpose.TREATMENT: "Treatment",
            Purpose.AUTHORIZATION: "Under the patient's signed authorization",
            Purpose.LEGAL: "Subpoena or court order", Purpose.OPERATIONS: "Health care operations",
            Purpose.RESEARCH: "Research", Purpose.TEACHING: "Teaching"}
IDENTITY = {IdentityCheck.PHOTO_ID: "Photo ID inspected", IdentityCheck.KNOWN_TO_STAFF: "Known to staff",
            IdentityCheck.CALLBACK: "Called back on the number on file",
            IdentityCheck.SIGNED_REQUEST: "Signed written request",
            IdentityCheck.PROVIDER_DIRECTORY: "Provider checked in the directory"}
DELIVERY = {Delivery.HANDED_OVER: "Handed over in person, apart from the media",
            Delivery.PHONE: "Read out by phone",
            Delivery.COVER_LETTER: "Printed cover letter, sent separately",
            Delivery.SEPARATE_EMAIL: "Separate e-mail"}


def _combo(choices: dict) -> QComboBox:
    box = QComboBox()
    for value, text in choices.items():
        box.addItem(text, value)
    return box


class _CommitPage(QWizardPage):
    def __init__(self, commit: Callable[[], bool]) -> None:
        super().__init__()
        self._commit = commit

    def validatePage(self) -> bool:
        return self._commit()


class ExportWizard(QWizard):
    """``result`` holds the export once it is done; the passphrase is only on the last page."""

    _done = Signal()

    def __init__(self, vault: Vault, session: Session, studies: list[StudySummary], chosen: str | None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Custodian — Export media")
        self.setMinimumSize(620, 460)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setOption(QWizard.WizardOption.NoCancelButtonOnLastPage, True)
        self._vault, self._session = vault, session
        # the export once done (the name the class docstring and callers use), not QDialog.result()
        self.result: ExportResult | None = None  # type: ignore[assignment]
        self._finished = Bridge(self._exported, self)
        self._progressed = Bridge(self._progress, self)

        # 1 studies
        self.studies_page = page = self._page("Studies", "The studies of this patient to put on the media.")
        self.study_list = QListWidget()
        for study in studies:
            item = QListWidgetItem(f"{study.study_date}  {study.description or '(no description)'}  "
                                   f"{','.join(study.modalities)}  {study.instances} images")
            item.setData(Qt.ItemDataRole.UserRole, study.study_uid)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = study.study_uid == chosen
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.study_list.addItem(item)
        QVBoxLayout(page).addWidget(self.study_list)
        self.addPage(page)

        # 2 recipient and purpose
        page = self._page("Recipient and purpose", "Who receives the images, and on what legal basis.")
        form = QFormLayout(page)
        self.recipient_kind = _combo(RECIPIENTS)
        self.recipient = QLineEdit()
        self.recipient.setPlaceholderText("Name of the person or organisation")
        self.purpose = _combo(PURPOSES)
        self.authorization = QLineEdit()
        self.authorization.setPlaceholderText("Authorization, request or order reference")
        self.deidentify = QCheckBox("De-identify (PS3.15 Annex E basic profile)")
        self.retain_dates = QCheckBox("Keep intervals between dates (shifted dates)")
        self.clean_descriptors = QCheckBox("Keep study and series descriptions that name nobody")
        for box in (self.retain_dates, self.clean_descriptors):
            box.setEnabled(False)
            self.deidentify.toggled.connect(box.setEnabled)
        form.addRow("Recipient type", self.recipient_kind)
        form.addRow("Recipient", self.recipient)
        form.addRow("Purpose", self.purpose)
        form.addRow("Reference", self.authorization)
        form.addRow("", self.deidentify)
        form.addRow("", self.retain_dates)
        form.addRow("", self.clean_descriptors)
        page.registerField("recipient*", self.recipient)
        self.addPage(page)

        # 3 identity and delivery
        page = self._page("Identity and passphrase",
                          "How the requester was identified, and how the passphrase will reach them.")
        form = QFormLayout(page)
        self.identity = _combo(IDENTITY)
        self.delivery = _combo(DELIVERY)
        form.addRow("Identity checked by", self.identity)
        form.addRow("Passphrase delivery", self.delivery)
        self.addPage(page)

        # 4 media and confirmation
        self.confirm_page = page = self._page(
            "Media", "Always encrypted (AES-256). Confirm with your authenticator: the export is recorded "
            "as a disclosure.", _CommitPage(self._export))
        page.setCommitPage(True)
        page.setButtonText(QWizard.WizardButton.CommitButton, "Export")
        form = QFormLayout(page)
        self.media = _combo({MediaKind.ZIP: "USB stick or e-mail (encrypted .zip)",
                             MediaKind.ISO: "CD/DVD image (.iso with the encrypted archive)"})
        self.out = QLineEdit()
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_file)
        row = QHBoxLayout()
        row.addWidget(self.out)
        row.addWidget(choose)
        self.label = QLineEdit()
        self.code = code_edit()
        self.progress = QProgressBar()
        self.progress.hide()
        self.error = error_label()
        form.addRow("Media", self.media)
        form.addRow("Save as", row)
        form.addRow("Label", self.label)
        form.addRow("Code", self.code)
        form.addRow(self.progress)
        form.addRow(self.error)
        page.registerField("out*", self.out)
        page.registerField("code*", self.code)
        self.addPage(page)

        # 5 the passphrase
        self.passphrase_page = page = QWizardPage()
        page.setTitle("Passphrase — shown only now")
        layout = QVBoxLayout(page)
        self.passphrase = QLabel()
        font = QFont("monospace")
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.passphrase.setFont(font)
        self.passphrase.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary = hint_label()
        self.letter_button = QPushButton("Save cover letter (PDF)…")
        self.letter_button.clicked.connect(self._save_letter)
        layout.addWidget(hint_label("Give this passphrase to the recipient apart from the media. It is not "
                                    "stored anywhere and cannot be shown again."))
        layout.addWidget(self.passphrase)
        layout.addWidget(self.summary)
        layout.addWidget(self.letter_button)
        layout.addStretch()
        self.addPage(page)
        self._waiting = False

    def _page(self, title: str, subtitle: str, page: QWizardPage | None = None) -> QWizardPage:
        page = page or QWizardPage()
        page.setTitle(title)
        page.setSubTitle(subtitle)
        return page

    def chosen_studies(self) -> tuple[str, ...]:
        items = (self.study_list.item(i) for i in range(self.study_list.count()))
        return tuple(i.data(Qt.ItemDataRole.UserRole) for i in items
                     if i.checkState() == Qt.CheckState.Checked)

    def request(self) -> ExportRequest:
        suffix = f".{self.media.currentData()}"
        out = Path(self.out.text()).expanduser()
        return ExportRequest(
            self.chosen_studies(), RecipientKind(self.recipient_kind.currentData()), self.recipient.text(),
            Purpose(self.purpose.currentData()), IdentityCheck(self.identity.currentData()),
            Delivery(self.delivery.currentData()), MediaKind(self.media.currentData()),
            out if out.suffix else out.with_suffix(suffix),
            self.authorization.text(), self.label.text(),
            DeidOptions(self.retain_dates.isChecked(), self.clean_descriptors.isChecked())
            if self.deidentify.isChecked() else None)

    def _choose_file(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save media as", str(Path.home()),
                                              "Encrypted media (*.zip *.iso)")
        if name:
            self.out.setText(name)

    def _export(self) -> bool:
        """The commit: runs the export in the background and stays on the page until it is done."""
        if self.result is not None:
            return True
        if self._waiting:
            return False
        try:
            request = self.request()
        except CustodianError as exc:
            show_message(self.error, str(exc))
            return False
        show_message(self.error, "")
        self._waiting = True
        self.progress.setValue(0)
        self.progress.show()
        self.button(QWizard.WizardButton.CommitButton).setEnabled(False)
        code = self.code.text()
        self.code.clear()  # a code is good once, whatever happens
        session, progressed = self._session, self._progressed.post
        in_background("export", lambda: self._vault.disclosure.export(session, request, code, progressed),
                      lambda result, error: self._finished.post(result, error))
        return False

    def _progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(total)
        self.progress.setValue(done)

    def _exported(self, result: ExportResult | None, error: str | None) -> None:
        self._waiting = False
        self.progress.hide()
        self.button(QWizard.WizardButton.CommitButton).setEnabled(True)
        if result is None:
            show_message(self.error, error or "The export failed.")
            return
        self.result = result
        self.passphrase.setText(result.passphrase)
        review = (f"\n{result.review} de-identified image(s) may carry burnt-in text: look at them "
                  "before handing the media over.") if result.review else ""
        left_out = (f"\n{len(result.left_out)} image(s) could not be put on the media and were left off "
                    f"({result.left_out[0][1]})") if result.left_out else ""
        self.summary.setText(f"Written {result.out} — {result.instances} images, media serial "
                             f"{result.serial}, disclosure #{result.disclosure_id} recorded."
                             + review + left_out)
        self.next()
        self._done.emit()

    def _save_letter(self) -> None:
        if self.result is None:
            return
        suggested = str(Path.home() / "cover-letter.pdf")
        name, _ = QFileDialog.getSaveFileName(self, "Save cover letter", suggested, "PDF (*.pdf)")
        if name:
            letter = cover_letter(self.result, self._vault.policy.ae_title)
            Path(name).write_bytes(letter)
