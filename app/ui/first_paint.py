"""Trace moments at a widget's first paint: when the reader can see it, not when it was made; and
work that may wait until a widget is on screen (what the login dialog does not need)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget

from app import trace


class _FirstPaint(QObject):
    def __init__(self, widget: QWidget, then: Callable[[], object]) -> None:
        super().__init__(widget)
        self._then = then

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self._painted)  # once the paint is done: the event loop's next turn
        return False

    def _painted(self) -> None:
        self._then()
        self.deleteLater()


def after_first_paint(widget: QWidget, then: Callable[[], object]) -> None:
    """Call ``then`` once ``widget`` has first been painted, on the event loop's next turn. Of two
    calls for one widget, the later one's ``then`` runs first (Qt runs the last filter first)."""
    widget.installEventFilter(_FirstPaint(widget, then))


def mark_first_paint(widget: QWidget, event: str, **numbers: float) -> None:
    """Mark ``event`` in the trace once ``widget`` has first been painted (nothing without a trace)."""
    if trace.enabled():
        after_first_paint(widget, partial(trace.mark, event, **numbers))
