"""Setting up an authenticator: the QR code, the otpauth address and the recovery codes, once.

The secret lives only in the :class:`Enrolment` and in this dialog while it is open: the QR code
is drawn in memory (segno PNG bytes straight into a QPixmap), nothing is written to disk or to the
clipboard, and the widgets are emptied when the dialog closes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import segno
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QPixmap
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from app.errors import CustodianError
from app.security.accounts import Enrolment
from app.security.sessions import Session
from app.ui.forms import FormDialog, busy, code_edit, hint_label
from app.vault import Vault

QR_SCALE = 5  # screen pixels per QR module: about 230 px for an otpauth address
QR_BORDER = 4  # the quiet zone scanners need around the code

Confirm = Callable[[str], Session]


def qr_pixmap(text: str) -> QPixmap:
    """``text`` as a black-on-white QR code, made in memory only."""
    png = io.BytesIO()
    segno.make(text, error="m").save(png, kind="png", scale=QR_SCALE, border=QR_BORDER)
    pixmap = QPixmap()
    pixmap.loadFromData(png.getvalue(), "PNG")
    return pixmap


class EnrolmentDialog(FormDialog):
    """Shows an enrolment; with ``confirm`` the owner proves the app works by typing its code.

    Without ``confirm`` (an administrator handing a new account over) it only shows.
    """

    def __init__(self, enrolment: Enrolment, confirm: Confirm | None, *, heading: str,
                 parent: QWidget | None = None) -> None:
        scan = "Scan the QR code with the authenticator app (or type the address below into it)"
        intro = (f"{scan}, then enter the 6-digit code the app shows." if confirm else
                 f"Give this to {enrolment.user.name} in person. {scan} on their phone; "
                 "they then log in with its code.")
        super().__init__("Custodian — Authenticator", heading, intro,
                         "Confirm" if confirm else "Done", cancel=confirm is not None, parent=parent)
        self.enrolment = enrolment
        self._confirm = confirm
        self.session: Session | None = None
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)

        self.qr_label = QLabel()
        self.qr_label.setPixmap(qr_pixmap(enrolment.totp_uri))
        self.qr_label.setToolTip("Scan with Google Authenticator, Microsoft Authenticator, FreeOTP or "
                                 "any other TOTP app")
        codes_title = QLabel("<b>Recovery codes</b>")
        codes_hint = hint_label("Each one logs in once if the phone is lost. Write them down now and "
                                "keep them apart from the phone: they are not shown again.")
        codes = QGridLayout()
        codes.setHorizontalSpacing(18)
        self.code_labels: list[QLabel] = []
        for i, code in enumerate(enrolment.recovery_codes):
            label = QLabel(code)
            label.setFont(mono)
            codes.addWidget(label, i // 2, i % 2)
            self.code_labels.append(label)
        side = QVBoxLayout()
        side.addWidget(codes_title)
        side.addWidget(codes_hint)
        side.addLayout(codes)
        side.addStretch(1)
        top = QHBoxLayout()
        top.setSpacing(16)
        top.addWidget(self.qr_label, 0, Qt.AlignmentFlag.AlignTop)
        top.addLayout(side, 1)

        self.uri_edit = QLineEdit(enrolment.totp_uri)
        self.uri_edit.setReadOnly(True)
        self.uri_edit.setFont(mono)
        self.uri_edit.setCursorPosition(0)
        self.uri_edit.setToolTip("The authenticator entry as text, for apps that cannot scan")
        self.body.addLayout(top)
        self.body.addWidget(self.uri_edit)
        self.code_edit = code_edit()
        if confirm is not None:  # else the field is never shown: the administrator confirms nothing
            self.add_field("Code", self.code_edit, code=True)
        self.setMinimumWidth(560)

    def submit(self) -> bool:
        if self._confirm is None:
            return True
        self.session = self._confirm(self.code_edit.text())
        return True

    def done(self, result: int) -> None:
        """Forget the secret on screen however the dialog closes."""
        self.qr_label.clear()
        self.uri_edit.clear()
        for label in self.code_labels:
            label.clear()
        super().done(result)


def first_enrolment(vault: Vault, enrolment: Enrolment, parent: QWidget | None = None) -> Session | None:
    """A new account's first login: the session once the authenticator is confirmed, else None."""
    dialog = EnrolmentDialog(enrolment,
                             lambda code: vault.accounts.finish_first_enrolment(enrolment, code)[1],
                             heading="Set up your authenticator", parent=parent)
    return dialog.session if dialog.exec() else None


def reenrol(vault: Vault, session: Session, parent: QWidget | None = None) -> Session | None:
    """A new authenticator for the session's own user; the updated session, or None if cancelled."""
    with busy():
        enrolment = vault.accounts.begin_reenrolment(session)
    dialog = EnrolmentDialog(enrolment,
                             lambda code: vault.accounts.finish_reenrolment(session, enrolment, code),
                             heading="Set up your authenticator again", parent=parent)
    return dialog.session if dialog.exec() else None


def required_reenrolment(vault: Vault, session: Session, parent: QWidget | None = None) -> Session | None:
    """After a recovery-code login nothing works until the authenticator is set up again.

    Returns the usable session; if the reader cancels, the session is ended and None returned.
    """
    if not session.needs_enrolment:
        return session
    enrolled = None
    try:
        enrolled = reenrol(vault, session, parent)
    finally:
        if enrolled is None:
            with contextlib.suppress(CustodianError):  # already ended: nothing left to end
                vault.accounts.logout(session)
    return enrolled
