"""Break-glass: emergency access to a restricted patient, with a stated reason and a fresh code.

The dialog says plainly what happens: the access is recorded with the reason and the privacy
officer is alerted. The vault checks the reason and the code and grants access for a while.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLineEdit, QWidget

from app.errors import NotAuthenticated
from app.security.sessions import Session
from app.ui.forms import FormDialog, busy, code_edit, hint_label
from app.vault import Vault


class BreakGlassDialog(FormDialog):
    """Accepted once the vault granted access; ``expires_at`` (epoch seconds) then says until when."""

    def __init__(self, vault: Vault, session: Session, study_uid: str, refusal: str,
                 parent: QWidget | None = None) -> None:
        minutes = vault.policy.break_glass_seconds // 60
        super().__init__("Custodian — Break glass", "Emergency access", refusal, "Break glass",
                         parent=parent)
        self._vault = vault
        self._session = session
        self._study_uid = study_uid
        self.expires_at: float | None = None
        self.ended: str | None = None  # why the vault ended the session meanwhile (a lock after wrong codes)
        self.notice_label = hint_label(
            f"Only in an emergency. Your name, the time and your reason are recorded in the audit trail "
            f"and the privacy officer is alerted at once. Access to this patient lasts {minutes} minutes.")
        self.body.addWidget(self.notice_label)
        self.reason_edit = self.add_field("Reason", QLineEdit())
        self.reason_edit.setPlaceholderText("e.g. trauma call, patient unconscious, needs prior imaging")
        self.reason_edit.setToolTip("Why you need this patient's images now (at least 10 characters)")
        self.code_edit = self.add_field("Code", code_edit(), code=True)

    def submit(self) -> bool:
        try:
            with busy():
                self.expires_at = self._vault.reading.break_glass(self._session, self._study_uid,
                                                                  self.reason_edit.text(),
                                                                  self.code_edit.text())
        except NotAuthenticated as exc:  # nothing more to try here: the window locks, saying why
            self.ended = str(exc)
            self.reject()
            return False
        return True
