"""The film library's export wizard: studies → recipient → purpose → identity check → media →
confirm with the authenticator → the passphrase, shown once.

Every rule (role, business associate agreement, de-identification, size limit) is the vault's;
a refusal is shown on the confirmation page in the vault's own words and nothing is written.
The pages (app.ui.export_pages) own their widgets; the wizard puts them in order and reads them
into one :class:`ExportRequest`.
"""

from __future__ import annotations

from PySide6.QtWidgets import QWidget, QWizard

from app.media.disclosures import (
    Delivery,
    ExportRequest,
    ExportResult,
    IdentityCheck,
    MediaKind,
    Purpose,
    RecipientKind,
)
from app.security.sessions import Session
from app.store.records import StudySummary
from app.ui.export_pages import IdentityPage, MediaPage, PassphrasePage, RecipientPage, StudiesPage
from app.vault import Vault


class ExportWizard(QWizard):
    """``result`` holds the export once it is done; the passphrase is only on the last page."""

    def __init__(self, vault: Vault, session: Session, studies: list[StudySummary], chosen: str | None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Custodian — Export media")
        self.setMinimumSize(620, 460)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setOption(QWizard.WizardOption.NoCancelButtonOnLastPage, True)
        self.studies_page = StudiesPage(studies, chosen)
        self.recipient_page = RecipientPage()
        self.identity_page = IdentityPage()
        self.confirm_page = MediaPage(vault, session, self.request)
        self.passphrase_page = PassphrasePage(vault)
        for page in (self.studies_page, self.recipient_page, self.identity_page, self.confirm_page,
                     self.passphrase_page):
            self.addPage(page)
        self.confirm_page.exported.connect(self._exported)
        # the fields callers fill in and read, by the names they had before the pages
        who, media = self.recipient_page, self.confirm_page
        self.recipient, self.purpose = who.recipient, who.purpose
        self.out, self.code, self.error = media.out, media.code, media.error
        self.passphrase = self.passphrase_page.passphrase

    @property
    def result(self) -> ExportResult | None:  # type: ignore[override]
        """The export once done (the name callers use), not QDialog.result()."""
        return self.confirm_page.result

    def chosen_studies(self) -> tuple[str, ...]:
        return self.studies_page.chosen_studies()

    def request(self) -> ExportRequest:
        """The request the pages describe; it refuses (CustodianError) what no export may be."""
        who, check, media = self.recipient_page, self.identity_page, self.confirm_page
        return ExportRequest(
            self.chosen_studies(), RecipientKind(who.recipient_kind.currentData()), who.recipient.text(),
            Purpose(who.purpose.currentData()), IdentityCheck(check.identity.currentData()),
            Delivery(check.delivery.currentData()), MediaKind(media.media.currentData()), media.destination(),
            who.authorization.text(), media.label.text(), who.deid_options())

    def _exported(self, result: ExportResult) -> None:
        self.passphrase_page.show_result(result)
        self.next()
