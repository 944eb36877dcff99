"""Empties the clipboard at the lock when what it holds was copied in Custodian.

Qt says whether the app owns the clipboard only on some platforms, so the guard also remembers
whether the last change happened while one of the app's windows was active: that copy was ours.
Text another program put there is left alone.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QClipboard
from PySide6.QtWidgets import QApplication


class ClipboardGuard(QObject):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ours = False
        QApplication.clipboard().dataChanged.connect(self._changed)

    def clear(self) -> None:
        """Empty the clipboard (and the X11 selection) if the app filled it."""
        clipboard = QApplication.clipboard()
        if self._ours or clipboard.ownsClipboard():
            clipboard.clear(QClipboard.Mode.Clipboard)
        if clipboard.supportsSelection() and clipboard.ownsSelection():
            clipboard.clear(QClipboard.Mode.Selection)
        self._ours = False

    def _changed(self) -> None:
        self._ours = QApplication.activeWindow() is not None
