"""Trace moments at a widget's first paint: when the reader can see it, not when it was made."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget

from app import trace


class _FirstPaint(QObject):
    def __init__(self, widget: QWidget, event: str, numbers: dict[str, float]) -> None:
        super().__init__(widget)
        self._event, self._numbers = event, numbers

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self._marked)  # once the paint is done: the event loop's next turn
        return False

    def _marked(self) -> None:
        trace.mark(self._event, **self._numbers)
        self.deleteLater()


def mark_first_paint(widget: QWidget, event: str, **numbers: float) -> None:
    """Mark ``event`` in the trace once ``widget`` has first been painted (nothing without a trace)."""
    if trace.enabled():
        widget.installEventFilter(_FirstPaint(widget, event, numbers))
