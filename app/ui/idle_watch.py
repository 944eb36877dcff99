"""Automatic logoff (HIPAA 164.312(a)(2)(iii)): notice when nobody has touched the application.

An event filter on the QApplication sees every key, mouse, wheel and touch event of every window
of the app, dialogs included. It only notes the time, so a fast mouse costs nothing; a single
timer checks that time when the limit could first have passed.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

T = QEvent.Type
INPUT_EVENTS = frozenset({
    T.KeyPress, T.ShortcutOverride, T.MouseButtonPress, T.MouseButtonDblClick, T.MouseMove, T.Wheel,
    T.TouchBegin, T.TouchUpdate, T.TabletPress, T.TabletMove, T.InputMethod,
})
HEARTBEAT_SECONDS = 15.0  # how often ongoing input is passed on as `active`


class IdleWatch(QObject):
    """Emits ``idle`` once ``limit`` seconds pass without input, and ``active`` now and then on input.

    ``active`` lets the window tell the vault that the reader is still there even while no image
    is being read (the vault only sees its own calls).
    """

    idle = Signal()
    active = Signal()

    def __init__(self, limit: float, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._limit = limit
        self._last_input = self._last_heartbeat = time.monotonic()
        self._last_pointer: QPoint | None = None
        self._running = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._check)

    @property
    def limit(self) -> float:
        return self._limit

    @limit.setter
    def limit(self, seconds: float) -> None:
        self._limit = seconds
        if self._running:
            self._arm()

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Count idle time from now."""
        self._last_input = time.monotonic()
        if not self._running:
            self._running = True
            app = QApplication.instance()
            if app is not None:
                app.installEventFilter(self)
        self._arm()

    def stop(self) -> None:
        if self._running:
            self._running = False
            app = QApplication.instance()
            if app is not None:
                app.removeEventFilter(self)
        self._timer.stop()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in INPUT_EVENTS and self._is_input(event):
            now = time.monotonic()
            self._last_input = now
            if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
                self._last_heartbeat = now
                QTimer.singleShot(0, self, self.active.emit)  # after this event, not in the middle of it
        return False

    def _is_input(self, event: QEvent) -> bool:
        """A mouse move counts only when the pointer really moved (Qt also sends them on enter)."""
        if event.type() != T.MouseMove or not isinstance(event, QMouseEvent):
            return True
        pointer = event.globalPosition().toPoint()
        moved = pointer != self._last_pointer
        self._last_pointer = pointer
        return moved

    def _arm(self) -> None:
        remaining = self._limit - (time.monotonic() - self._last_input)
        self._timer.start(max(1, round(remaining * 1000)))

    def _check(self) -> None:
        if not self._running:
            return
        if time.monotonic() - self._last_input >= self._limit:
            self.stop()
            self.idle.emit()
        else:
            self._arm()
