"""Work the workstation repeats in the background: forwarding the audit trail, watching the PACS.

One thread per job. A step returns None when it went well and a plain error otherwise; after an
error the job waits longer each time (up to a limit), so an absent peer is not hammered, and
``wake`` makes it try at once (a security alert to send, a setting changed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Step = Callable[[threading.Event], str | None]


class Periodic:
    def __init__(self, name: str, setup: Callable[[], Step], *, interval: float,
                 max_backoff: float = 60.0) -> None:
        """``setup`` runs on the job's own thread (a database connection made there belongs to it)
        and returns the step; the step gets the stop event to cut long work short."""
        self._setup = setup
        self.interval = interval
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        step = self._setup()
        delay = self.interval
        while not self._stop.is_set():
            failed = step(self._stop) is not None
            delay = min(delay * 2, self.max_backoff) if failed else self.interval
            self._wake.wait(delay)
            self._wake.clear()
