"""What every credential form shares: password and code fields, the plain refusal, the busy cursor.

:class:`FormDialog` is the shape of the login, password, user, enrolment and break-glass dialogs:
the OK button asks the vault, and a refusal keeps the dialog open with the vault's plain message
and an empty code field, because an authenticator code is never accepted twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.errors import CustodianError

ERROR_STYLE = "color: #ff8a80;"
HINT_STYLE = "color: #9da1a7;"
RECOVERY_CODE_LENGTH = 14  # "xxxx-xxxx-xxxx"


@contextlib.contextmanager
def busy() -> Iterator[None]:
    """A wait cursor around a vault call (password hashing takes a moment)."""
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        yield
    finally:
        QApplication.restoreOverrideCursor()


def password_edit(tip: str = "Your password") -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    edit.setToolTip(tip)
    return edit


def code_edit(*, recovery: bool = False) -> QLineEdit:
    """The authenticator code; with ``recovery`` a one-time recovery code is accepted too."""
    edit = QLineEdit()
    edit.setMaxLength(RECOVERY_CODE_LENGTH if recovery else 6)
    edit.setPlaceholderText("6-digit code")
    edit.setToolTip("The current code from your authenticator app"
                    + (", or one of your recovery codes" if recovery else ""))
    return edit


def link_button(text: str) -> QPushButton:
    """A button drawn as a link, for a second way through a form."""
    button = QPushButton(text)
    button.setProperty("link", True)
    button.setFlat(True)
    button.setAutoDefault(False)
    button.setCursor(Qt.CursorShape.PointingHandCursor)
    return button


def heading_label(text: str, scale: float = 1.6) -> QLabel:
    label = QLabel(text)
    font = QFont(label.font())
    font.setPointSizeF(font.pointSizeF() * scale)
    font.setBold(True)
    label.setFont(font)
    return label


def hint_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(HINT_STYLE)
    return label


def error_label() -> QLabel:
    """Hidden until there is a refusal to show."""
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    label.hide()
    return label


def show_message(label: QLabel, message: str) -> None:
    label.setText(message)
    label.setVisible(bool(message))


class FormDialog(QDialog):
    """Heading, explanation, optional body, a form, the refusal line and OK/Cancel.

    Subclasses add fields and implement :meth:`submit`; a ``CustodianError`` from it (or
    :meth:`refuse`) keeps the dialog open.
    """

    def __init__(self, window_title: str, heading: str, intro: str, ok_text: str, *,
                 cancel: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(window_title)
        self.setMinimumWidth(460)
        self._required: list[QLineEdit] = []
        self._codes: list[QLineEdit] = []

        self.intro_label = hint_label(intro)
        self.body = QVBoxLayout()
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.error_label = error_label()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        if cancel:
            self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel).setAutoDefault(False)
        self.ok_button: QPushButton = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText(ok_text)
        self.ok_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(heading_label(heading))
        layout.addWidget(self.intro_label)
        layout.addLayout(self.body)
        layout.addLayout(self.form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)

    def sizeHint(self) -> QSize:
        """As tall as the wrapped texts need at the dialog's width (Qt measures them narrower)."""
        hint = super().sizeHint()
        width = max(hint.width(), self.minimumWidth())
        height = self.heightForWidth(width)
        return QSize(width, height if height > 0 else hint.height())

    def add_field(self, label: str, edit: QLineEdit, *, required: bool = True,
                  code: bool = False) -> QLineEdit:
        """A form row; OK stays disabled until every required field has text."""
        self.form.addRow(label, edit)
        if required:
            self._required.append(edit)
            edit.textChanged.connect(self._update_ok)
        if code:
            self._codes.append(edit)
        self._update_ok()
        return edit

    def submit(self) -> bool:
        """Do the dialog's vault call; True closes the dialog, False (after :meth:`refuse`) keeps it."""
        raise NotImplementedError

    def accept(self) -> None:
        if not self.ok_button.isEnabled():
            return  # Enter in a field before the form is complete
        try:
            done = self.submit()
        except CustodianError as exc:
            self.refuse(str(exc))
            return
        if done:
            super().accept()

    def refuse(self, message: str) -> None:
        """Show the plain reason and ask for a fresh code (a code is never accepted twice)."""
        show_message(self.error_label, message)
        for edit in self._codes:
            edit.clear()
        focus = self._codes[0] if self._codes else next(iter(self._required), None)
        if focus is not None:
            focus.setFocus()

    def _update_ok(self) -> None:
        self.ok_button.setEnabled(all(edit.text().strip() for edit in self._required))
