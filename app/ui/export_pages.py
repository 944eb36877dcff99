"""The export wizard's pages, one per step, each owning its widgets and its validation.

The recipient, destination and code are mandatory fields (Qt's own ``isComplete``); every rule
beyond that is the vault's, so the media page's commit asks the vault and shows its refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QApplication,
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
    QWizard,
    QWizardPage,
)

from app.errors import CustodianError, NotAuthenticated
from app.media.deid import DeidOptions
from app.media.disclosures import (
    Delivery,
    ExportRequest,
    ExportResult,
    IdentityCheck,
    Letter,
    MediaKind,
    Purpose,
    RecipientKind,
    cover_letter,
    cover_letter_text,
)
from app.security.sessions import Session
from app.store.records import StudySummary
from app.ui.bridge import Bridge, in_background
from app.ui.cover_letter import print_with_dialog
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
CLIPBOARD_SECONDS = 30  # long enough to paste into a message, short enough not to linger
MEDIA = {MediaKind.ZIP: "USB stick or e-mail (encrypted .zip)",
         MediaKind.ISO: "CD/DVD image (.iso with the encrypted archive)"}


def _combo(choices: dict) -> QComboBox:
    box = QComboBox()
    for value, text in choices.items():
        box.addItem(text, value)
    return box


def _titled(page: QWizardPage, title: str, subtitle: str) -> None:
    page.setTitle(title)
    page.setSubTitle(subtitle)


class StudiesPage(QWizardPage):
    """The patient's studies, the one chosen in the library checked; an empty choice is the vault's
    refusal to show on the media page, as before."""

    def __init__(self, studies: list[StudySummary], chosen: str | None) -> None:
        super().__init__()
        _titled(self, "Studies", "The studies of this patient to put on the media.")
        self.study_list = QListWidget()
        for study in studies:
            item = QListWidgetItem(f"{study.study_date}  {study.description or '(no description)'}  "
                                   f"{','.join(study.modalities)}  {study.instances} images")
            item.setData(Qt.ItemDataRole.UserRole, study.study_uid)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = study.study_uid == chosen
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.study_list.addItem(item)
        QVBoxLayout(self).addWidget(self.study_list)

    def chosen_studies(self) -> tuple[str, ...]:
        items = (self.study_list.item(i) for i in range(self.study_list.count()))
        return tuple(i.data(Qt.ItemDataRole.UserRole) for i in items
                     if i.checkState() == Qt.CheckState.Checked)


class RecipientPage(QWizardPage):
    """Who receives the images and why, and whether they are de-identified; the recipient's name is
    mandatory before Next."""

    def __init__(self) -> None:
        super().__init__()
        _titled(self, "Recipient and purpose", "Who receives the images, and on what legal basis.")
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
        form = QFormLayout(self)
        form.addRow("Recipient type", self.recipient_kind)
        form.addRow("Recipient", self.recipient)
        form.addRow("Purpose", self.purpose)
        form.addRow("Reference", self.authorization)
        form.addRow("", self.deidentify)
        form.addRow("", self.retain_dates)
        form.addRow("", self.clean_descriptors)
        self.registerField("recipient*", self.recipient)

    def deid_options(self) -> DeidOptions | None:
        """None for identified images (the usual case: the patient's own)."""
        if not self.deidentify.isChecked():
            return None
        return DeidOptions(self.retain_dates.isChecked(), self.clean_descriptors.isChecked())


class IdentityPage(QWizardPage):
    """How the requester was identified and how the passphrase reaches them: the disclosure records both."""

    def __init__(self) -> None:
        super().__init__()
        _titled(self, "Identity and passphrase",
                "How the requester was identified, and how the passphrase will reach them.")
        self.identity = _combo(IDENTITY)
        self.delivery = _combo(DELIVERY)
        form = QFormLayout(self)
        form.addRow("Identity checked by", self.identity)
        form.addRow("Passphrase delivery", self.delivery)


class MediaPage(QWizardPage):
    """Media, destination and the authenticator code. The commit runs the export in the background and
    stays on the page until the vault has answered; ``exported`` then carries the result."""

    exported = Signal(object)  # ExportResult
    ended = Signal(str)  # why the vault ended the session meanwhile (a lock after wrong codes, say)

    def __init__(self, vault: Vault, session: Session, request: Callable[[], ExportRequest]) -> None:
        super().__init__()
        _titled(self, "Media", "Always encrypted (AES-256). Confirm with your authenticator: the export is "
                "recorded as a disclosure.")
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Export")
        self._vault, self._session, self._request = vault, session, request
        self.result: ExportResult | None = None
        self._waiting = False
        self._finished = Bridge(self._exported, self)
        self._progressed = Bridge(self._progress, self)
        self.media = _combo(MEDIA)
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
        form = QFormLayout(self)
        form.addRow("Media", self.media)
        form.addRow("Save as", row)
        form.addRow("Label", self.label)
        form.addRow("Code", self.code)
        form.addRow(self.progress)
        form.addRow(self.error)
        self.registerField("out*", self.out)
        self.registerField("code*", self.code)

    def destination(self) -> Path:
        """The path typed or chosen, given the media's suffix when it has none."""
        out = Path(self.out.text()).expanduser()
        return out if out.suffix else out.with_suffix(f".{self.media.currentData()}")

    def validatePage(self) -> bool:
        """The commit: passes only once the export is done (the wizard then moves on by itself)."""
        if self.result is not None:
            return True
        if self._waiting:
            return False
        try:
            request = self._request()
        except CustodianError as exc:
            show_message(self.error, str(exc))
            return False
        show_message(self.error, "")
        self.progress.setValue(0)
        self._busy(True)
        code = self.code.text()
        self.code.clear()  # a code is good once, whatever happens
        vault, session, progressed = self._vault, self._session, self._progressed.post
        in_background("export", lambda: vault.disclosure.export(session, request, code, progressed),
                      lambda result, error: self._finished.post(result, error))
        return False

    def _busy(self, waiting: bool) -> None:
        self._waiting = waiting
        self.progress.setVisible(waiting)
        self.wizard().button(QWizard.WizardButton.CommitButton).setEnabled(not waiting)

    def _progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(total)
        self.progress.setValue(done)

    def _exported(self, result: ExportResult | None, error: str | None) -> None:
        self._busy(False)
        if result is None:
            show_message(self.error, error or "The export failed.")
            try:
                self._vault.accounts.whoami(self._session)
            except NotAuthenticated as exc:
                self.ended.emit(str(exc))
            return
        self.result = result
        self.exported.emit(result)

    def _choose_file(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save media as", str(Path.home()),
                                              "Encrypted media (*.zip *.iso)")
        if name:
            self.out.setText(name)


class PassphrasePage(QWizardPage):
    """The passphrase, shown only here and only once, whole (wrapped at its dashes when the page is
    narrow), with a copy that does not outstay its use and the cover letter that may carry it."""

    def __init__(self, vault: Vault) -> None:
        super().__init__()
        self.setTitle("Passphrase — shown only now")
        self._vault = vault
        self._result: ExportResult | None = None
        self.passphrase = QLabel()
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.TypeWriter)
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.passphrase.setFont(font)
        self.passphrase.setWordWrap(True)
        self.passphrase.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                                | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.summary = hint_label()
        self.copied = hint_label()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip(f"Put the passphrase on the clipboard; it is taken off after "
                                    f"{CLIPBOARD_SECONDS} seconds unless something else replaced it")
        self.copy_button.clicked.connect(self.copy_passphrase)
        self.print_button = QPushButton("Print cover letter…")
        self.print_button.clicked.connect(self._print_letter)
        self.letter_button = QPushButton("Save cover letter (PDF)…")
        self.letter_button.clicked.connect(self._save_letter)
        buttons = QHBoxLayout()
        for button in (self.copy_button, self.print_button, self.letter_button):
            buttons.addWidget(button)
        buttons.addStretch()
        layout = QVBoxLayout(self)
        layout.addWidget(hint_label("Give this passphrase to the recipient apart from the media. It is not "
                                    "stored anywhere and cannot be shown again."))
        layout.addWidget(self.passphrase)
        layout.addLayout(buttons)
        layout.addWidget(self.copied)
        layout.addWidget(self.summary)
        layout.addStretch()

    def show_result(self, result: ExportResult) -> None:
        self._result = result
        self.passphrase.setText(result.passphrase)
        review = (f"\n{result.review} de-identified image(s) may carry burnt-in text: look at them "
                  "before handing the media over.") if result.review else ""
        left_out = (f"\n{len(result.left_out)} image(s) could not be put on the media and were left off "
                    f"({result.left_out[0][1]})") if result.left_out else ""
        self.summary.setText(f"Written {result.out} — {result.instances} images, media serial "
                             f"{result.serial}, disclosure #{result.disclosure_id} recorded."
                             + review + left_out)

    def copy_passphrase(self) -> None:
        if self._result is None:
            return
        copy_for_a_while(self._result.passphrase, CLIPBOARD_SECONDS)
        self.copied.setText(f"Copied. The clipboard is cleared in {CLIPBOARD_SECONDS} seconds.")

    def letter(self) -> Letter | None:
        return None if self._result is None else cover_letter_text(self._result, self._vault.policy.ae_title)

    def _print_letter(self) -> None:
        letter = self.letter()
        if letter is not None:
            print_with_dialog(letter, self)

    def _save_letter(self) -> None:
        if self._result is None:
            return
        suggested = str(Path.home() / "cover-letter.pdf")
        name, _ = QFileDialog.getSaveFileName(self, "Save cover letter", suggested, "PDF (*.pdf)")
        if name:
            Path(name).write_bytes(cover_letter(self._result, self._vault.policy.ae_title))


def copy_for_a_while(text: str, seconds: float) -> None:
    """Put ``text`` on the clipboard and take it off after ``seconds``, unless something else was
    copied meanwhile; the timer lives with the clipboard, so closing the wizard does not keep it."""
    clipboard = QApplication.clipboard()
    clipboard.setText(text)

    def clear() -> None:
        if clipboard.text() == text:
            clipboard.clear()

    QTimer.singleShot(int(seconds * 1000), clipboard, clear)
