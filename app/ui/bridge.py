"""Results from background threads, handed to the GUI thread (Qt widgets live only there).

A worker may finish after the widget that asked has been closed and deleted. Emitting a signal
of a QObject that the GUI thread is destroying at that moment is undefined behaviour (a crash),
so workers never emit on the asker's objects: they emit on one dispatcher that lives as long as
the application, and the dispatcher, on the GUI thread, drops results whose receiver is gone.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Signal, Slot

from app.errors import CustodianError

T = TypeVar("T")


class _Dispatcher(QObject):
    delivered = Signal(object, tuple)  # weak reference to a Bridge, values

    def __init__(self, parent: QObject | None) -> None:
        super().__init__(parent)
        self.delivered.connect(self._deliver)  # queued: the dispatcher lives in the GUI thread

    @Slot(object, tuple)
    def _deliver(self, bridge_ref: weakref.ref[Bridge], values: tuple[Any, ...]) -> None:
        bridge = bridge_ref()
        if bridge is not None and shiboken6.isValid(bridge):
            bridge.receive(values)


_dispatcher: _Dispatcher | None = None


def _the_dispatcher() -> _Dispatcher:
    """Made on first use, by a Bridge created on the GUI thread, and kept by the application."""
    global _dispatcher
    if _dispatcher is None or not shiboken6.isValid(_dispatcher):
        _dispatcher = _Dispatcher(QCoreApplication.instance())
    return _dispatcher


class Bridge(QObject):
    """``post(*values)`` from any thread calls ``receiver(*values)`` on the GUI thread, unless
    the bridge (a child of the receiver's widget) was deleted meanwhile."""

    def __init__(self, receiver: Callable[..., None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._receiver = receiver
        self._dispatcher = _the_dispatcher()

    def post(self, *values: Any) -> None:
        self._dispatcher.delivered.emit(weakref.ref(self), values)

    def receive(self, values: tuple[Any, ...]) -> None:
        self._receiver(*values)


def in_background(name: str, call: Callable[[], T],
                  done: Callable[[T | None, str | None], None]) -> threading.Thread:
    """``call()`` on a daemon thread, then ``done(result, None)``, or ``done(None, message)`` when
    it failed with a CustodianError (whose message is plain and safe to show). ``done`` runs on
    that thread: it should post to a :class:`Bridge`."""

    def work() -> None:
        try:
            result = call()
        except CustodianError as exc:
            done(None, str(exc))
            return
        done(result, None)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread
