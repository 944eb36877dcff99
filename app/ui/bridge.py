"""Results from background threads, handed to the GUI thread (Qt widgets live only there)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal

from app.errors import CustodianError

T = TypeVar("T")


class Bridge(QObject):
    """``post(*values)`` from any thread calls ``receiver(*values)`` on the GUI thread."""

    _posted = Signal(tuple)

    def __init__(self, receiver: Callable[..., None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._posted.connect(lambda values: receiver(*values))

    def post(self, *values: Any) -> None:
        self._posted.emit(values)


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
