"""Results from background threads, handed to the GUI thread (Qt widgets live only there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal


class Bridge(QObject):
    """``post(*values)`` from any thread calls ``receiver(*values)`` on the GUI thread."""

    _posted = Signal(tuple)

    def __init__(self, receiver: Callable[..., None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._posted.connect(lambda values: receiver(*values))

    def post(self, *values: Any) -> None:
        self._posted.emit(values)
