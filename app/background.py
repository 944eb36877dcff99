"""Work the workstation repeats in the background: forwarding the audit trail, watching the PACS.

One thread per job. A step returns None when it went well and a plain error otherwise; after an
error the job waits longer each time (up to a limit), so an absent peer is not hammered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Step = Callable[[threading.Event], str | None]
T = TypeVar("T")


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


@dataclass
class _Ticket(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Many threads' items, one commit: a thread that finds nobody committing commits everything
    queued, while the others wait for their own item's outcome (so one fsync serves them all).
    The audit writer and the storage SCP's receiver both work this way."""

    def __init__(self, commit: Callable[[list[T]], None]) -> None:
        self._commit = commit
        self._queue: list[_Ticket[T]] = []
        self._ready = threading.Condition()
        self.committing = False

    @property
    def waiting(self) -> int:
        with self._ready:
            return len(self._queue)

    def submit(self, item: T) -> None:
        """Return once ``item`` is committed; raise what its commit raised."""
        ticket = _Ticket(item)
        with self._ready:
            self._queue.append(ticket)
            while not ticket.done and self.committing:
                self._ready.wait()
            batch: list[_Ticket[T]] = []
            if not ticket.done:  # nobody is committing: this thread commits the queue
                self.committing = True
                batch, self._queue = self._queue, []
        if batch:
            error: BaseException | None = None
            try:
                self._commit([t.item for t in batch])
            except BaseException as exc:
                error = exc
            with self._ready:
                for t in batch:
                    t.done, t.error = True, error
                self.committing = False
                self._ready.notify_all()
        if ticket.error is not None:
            raise ticket.error
