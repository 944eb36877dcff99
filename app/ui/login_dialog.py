"""Log in with a password and a TOTP code; the vault decides, the dialog shows its plain answer."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError
from app.security.sessions import Session
from app.store.vault import Vault

ERROR_STYLE = "color: #ff8a80;"
HINT_STYLE = "color: #9da1a7;"
RECOVERY_CODE_LENGTH = 14  # "xxxx-xxxx-xxxx"


class LoginDialog(QDialog):
    """Accepted only once the vault has opened a session; ``session`` then holds it."""

    def __init__(self, vault: Vault, *, demo_codes: Callable[[], dict[str, str]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vault = vault
        self.session: Session | None = None
        self.setWindowTitle("Custodian — Log in")
        self.setMinimumWidth(400)

        title = QLabel("Custodian")
        font = QFont(title.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        title.setFont(font)
        subtitle = QLabel("Log in with your password and the code from your authenticator app.")
        subtitle.setWordWrap(True)
        subtitle.setStyleSheet(HINT_STYLE)

        self.user_edit = QLineEdit()
        self.user_edit.setToolTip("Your Custodian user name")
        self.password_edit = QLineEdit()
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.password_edit.setToolTip("Your password")
        self.code_edit = QLineEdit()
        self.code_edit.setMaxLength(RECOVERY_CODE_LENGTH)
        self.code_edit.setPlaceholderText("6-digit code")
        self.code_edit.setToolTip("The current code from your authenticator app, or one of your "
                                  "recovery codes")
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.addRow("User", self.user_edit)
        form.addRow("Password", self.password_edit)
        form.addRow("Code", self.code_edit)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.hide()
        self.demo_label = QLabel()
        self.demo_label.setWordWrap(True)
        self.demo_label.setStyleSheet(HINT_STYLE)
        self.demo_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.demo_label.setToolTip("Shown only for throw-away demo vaults")
        self.demo_label.setVisible(demo_codes is not None)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        self.login_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.login_button.setText("Log in")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(title)
        layout.addWidget(subtitle)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.demo_label)
        layout.addWidget(buttons)

        for edit in (self.user_edit, self.password_edit, self.code_edit):
            edit.textChanged.connect(self._update_button)
        self._update_button()
        if demo_codes is not None:
            self._show_demo_codes(demo_codes)
            timer = QTimer(self)
            timer.setInterval(1000)  # codes roll over every 30 s; keep the hint current
            timer.timeout.connect(lambda: self._show_demo_codes(demo_codes))
            timer.start()

    def accept(self) -> None:
        """Log in; on refusal stay open with the vault's message and ask for a fresh code."""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # password hashing takes a moment
        try:
            _, session = self._vault.login(self.user_edit.text().strip(), self.password_edit.text(),
                                           self.code_edit.text())
        except CustodianError as exc:
            self.error_label.setText(str(exc))
            self.error_label.show()
            self.code_edit.clear()
            self.code_edit.setFocus()
            return
        finally:
            QApplication.restoreOverrideCursor()
        self.session = session
        self.password_edit.clear()
        self.code_edit.clear()
        super().accept()

    def _update_button(self) -> None:
        self.login_button.setEnabled(all(edit.text().strip() for edit in
                                         (self.user_edit, self.password_edit, self.code_edit)))

    def _show_demo_codes(self, demo_codes: Callable[[], dict[str, str]]) -> None:
        codes = " · ".join(f"{name} {code}" for name, code in sorted(demo_codes().items()))
        self.demo_label.setText(f"Demo vault — current codes: {codes}")
