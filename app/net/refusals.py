"""Refused associations for the audit trail, without letting a flood of them fill it.

Every refusal is a Security Alert, but a host on the network can open thousands of associations a
minute under a false AE title. So the first few refusals of a kind (claimed AE title, address,
reason) in a window are passed on at once, and further ones within the window are counted and
passed on as one refusal carrying the count when the window closes (or the SCP stops): the trail
holds every kind of attempt and how many there were, in at most ``LISTED + 1`` records per kind
and window. Kinds are kept apart up to a
bound; beyond it, further kinds are counted together (memory stays bounded whatever is claimed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 60.0  # seconds: beyond LISTED, a refusal repeated within it is counted, not recorded again
LISTED = 5  # refusals of one kind recorded one by one in a window (a sender retrying a few times)
KINDS = 256  # kinds of refusal told apart in one window; beyond, one count for all the others
OTHERS = ("", "(other senders)", "more kinds of refused association than are told apart")


@dataclass(frozen=True)
class Refusal:
    """An association the SCP refused, for the audit trail (never shown to the sender)."""

    calling_ae: str  # as claimed; empty when it never got as far as claiming one
    address: str
    why: str
    repeated: int = 0  # refusals of this kind counted, not listed, in the window that closed


class RefusalDigest:
    """Passes refusals on to ``report``: each kind LISTED times per window, then its count."""

    def __init__(self, report: Callable[[Refusal], None], window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, str], tuple[float, int]] = {}  # kind -> (opened, seen)
        self._timer: threading.Timer | None = None

    def __call__(self, refusal: Refusal) -> None:
        now = self._clock()
        kind = (refusal.calling_ae, refusal.address, refusal.why)
        with self._lock:
            due = self._closed(now)
            if kind not in self._open and len(self._open) >= KINDS:
                kind = OTHERS
                refusal = Refusal(*OTHERS)
            opened, seen = self._open.get(kind, (now, 0))
            self._open[kind] = (opened, seen + 1)
            if seen < LISTED:
                due.append(refusal)
                self._wake_later()
        for each in due:
            self._report(each)

    def flush(self) -> None:
        """Every count not yet passed on (the SCP stops)."""
        with self._lock:
            due = self._closed(float("inf"))
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        for each in due:
            self._report(each)

    def _closed(self, now: float) -> list[Refusal]:
        """The counts of the windows that have closed by ``now``, taken out (under the lock)."""
        due = []
        for kind, (opened, seen) in list(self._open.items()):
            if now - opened >= self._window:
                del self._open[kind]
                if seen > LISTED:
                    due.append(Refusal(*kind, repeated=seen - LISTED))
        return due

    def _wake_later(self) -> None:
        """A flood that stops is still counted in the trail when its window closes."""
        if self._timer is None:
            self._timer = threading.Timer(self._window, self._woken)
            self._timer.daemon = True
            self._timer.start()

    def _woken(self) -> None:
        with self._lock:
            self._timer = None
            due = self._closed(self._clock())
            if self._open:
                self._wake_later()
        for each in due:
            self._report(each)
