"""The demo's code hint: throw-away demo homes show their users' current authenticator codes, on
the login dialog and on the lock screen, so that a newcomer can log in and unlock. A real home
never passes the codes, and then nothing is shown."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QWidget

from app.ui.forms import HINT_STYLE

DemoCodes = Callable[[], dict[str, str]]


class DemoCodesLabel(QLabel):
    """Current codes of every demo user, or of :attr:`user` alone once set; hidden without codes."""

    def __init__(self, demo_codes: DemoCodes | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._codes = demo_codes
        self.user = ""
        self.setWordWrap(True)
        self.setStyleSheet(HINT_STYLE)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setToolTip("Shown only for throw-away demo vaults")
        self.setVisible(demo_codes is not None)
        if demo_codes is not None:
            self.refresh()
            timer = QTimer(self)
            timer.setInterval(1000)  # codes roll over every 30 s; keep the hint current
            timer.timeout.connect(self.refresh)
            timer.start()

    def show_user(self, user: str) -> None:
        """Only ``user``'s code (the lock screen's), or everyone's for an empty name."""
        self.user = user
        self.refresh()

    def refresh(self) -> None:
        if self._codes is None:
            return
        codes = {name: code for name, code in self._codes().items() if not self.user or name == self.user}
        shown = " · ".join(f"{name} {code}" for name, code in sorted(codes.items()))
        self.setText(f"Demo vault — current code{'s' if len(codes) != 1 else ''}: {shown}")
