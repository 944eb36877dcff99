"""The card reader at the screen, where the site's second factor is a card: a card put in turns the
login's code field into the card's PIN prompt, and a card pulled out while someone works locks the
station at once (the lock screen then asks for the card and its PIN again).

The reader is polled on a timer a few times a second (a token-present check through the PKCS#11
module, no PIN: a millisecond or so); :mod:`app.security.card` does the talking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QLineEdit

from app.security.card import module_path, rescan, serials
from app.ui.forms import FormDialog

if TYPE_CHECKING:
    from app.ui.session_keeper import SessionKeeper

POLL_MS = 250
PIN_LENGTH = 32  # (cards take 4 to 8 digits, some more)
CARD_PIN = "Card PIN"
CARD_INTRO = ("Insert your card, then log in with your password and the card's PIN. A local account uses the "
              "code from its authenticator app.")
CARD_FOUND = "Card found: log in with your password and the card's PIN."
CARD_REMOVED = ("The card was removed, so the station locked. Insert your card and enter your password and "
                "the card's PIN to continue.")


class CardReader(QObject):
    """Emits ``inserted`` when a card comes into the reader and ``removed`` when one leaves it."""

    inserted = Signal()
    removed = Signal()

    def __init__(self, parent: QObject | None = None, module: str = "") -> None:
        super().__init__(parent)
        self._module = module or module_path()
        self._cards: frozenset[str] = frozenset()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

    @property
    def present(self) -> bool:
        return bool(self._cards)

    def start(self) -> None:
        self._cards = rescan(self._module)
        if self._cards:
            self.inserted.emit()
        self._timer.start()

    def poll(self) -> None:
        before, self._cards = self._cards, serials(self._module)
        if before - self._cards:
            self.removed.emit()
        if self._cards - before:
            self.inserted.emit()


def field_label(code: QLineEdit) -> QLabel | None:
    """The label of ``code``'s form row."""
    parent = code.parentWidget()
    for form in parent.findChildren(QFormLayout) if parent is not None else []:
        label = form.labelForField(code)
        if isinstance(label, QLabel):
            return label
    return None


def _word(code: QLineEdit, card: bool, code_text: str, code_length: int) -> None:
    """``code``'s form row asks for the card's PIN (hidden as typed) while a card is in the reader,
    else for the authenticator code as before."""
    label = field_label(code)
    if label is not None:
        label.setText(CARD_PIN if card else code_text)
    code.setEchoMode(QLineEdit.EchoMode.Password if card else QLineEdit.EchoMode.Normal)
    code.setPlaceholderText(CARD_PIN if card else "6-digit code")
    code.setMaxLength(PIN_LENGTH if card else code_length)


def _follow(reader: CardReader, code: QLineEdit, also: Callable[[bool], None] = lambda card: None) -> None:
    """Word ``code`` for the card whenever one comes or goes (and call ``also``)."""
    label = field_label(code)
    code_text, code_length = (label.text() if label is not None else "Code"), code.maxLength()

    def show() -> None:
        _word(code, reader.present, code_text, code_length)
        also(reader.present)

    reader.inserted.connect(show)
    reader.removed.connect(show)


def ask_card_pin(dialog: FormDialog, code: QLineEdit, second_factor: str) -> CardReader | None:
    """On a card site, the login dialog's code field becomes the card's PIN prompt while a card is in
    the reader; otherwise nothing changes."""
    if second_factor != "card":
        return None
    reader = CardReader(dialog)
    _follow(reader, code, lambda card: dialog.intro_label.setText(CARD_FOUND if card else CARD_INTRO))
    dialog.intro_label.setText(CARD_INTRO)
    reader.start()
    return reader


def lock_on_removal(keeper: SessionKeeper, second_factor: str) -> CardReader | None:
    """On a card site, pulling the card out locks the window; the lock screen asks for the card's PIN
    while a card is in the reader."""
    if second_factor != "card":
        return None
    reader = CardReader(keeper)
    _follow(reader, keeper.lock_screen.code_edit)
    reader.removed.connect(lambda: keeper.lock(CARD_REMOVED))
    reader.start()
    return reader
