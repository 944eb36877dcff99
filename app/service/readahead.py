"""Instances fetched from the service ahead of the viewer, in the direction it is reading.

Through the socket each instance is a request: the service decrypts one while the client waits,
then the client decodes it while the service idles. Keeping a few requests in flight along the
series (the direction of the last two reads) lets both processes work at once — scrolling and a
3D load read slices in order. At most ``window`` instances are held ahead (and two behind); a jump
elsewhere drops what was fetched for the old place. The fetching threads are the reader's (one set per client,
each with its kept-alive connection), not one set per series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

WINDOW = 8  # instances ahead (a 512² CT slice is 0.5 MB)
WORKERS = 3  # requests in flight: the service decrypts on its own cores meanwhile


def fetchers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(WORKERS, thread_name_prefix="readahead")


class ReadAhead:
    """``get(uid)`` answers one instance's bytes, fetching ahead along ``order``."""

    def __init__(self, order: list[str], fetch: Callable[[str], bytes], pool: ThreadPoolExecutor,
                 window: int = WINDOW) -> None:
        self._order = order
        self._position = {uid: i for i, uid in enumerate(order)}
        self._fetch = fetch
        self._window = window
        self._lock = threading.Lock()
        self._pending: dict[int, Future[bytes]] = {}
        self._last = -1
        self._step = 1
        self._against = 0
        self._pool = pool

    def get(self, uid: str) -> bytes:
        at = self._position.get(uid)
        if at is None:  # not of this series: plainly fetched (the service decides)
            return self._fetch(uid)
        with self._lock:
            self._turn(at)
            mine = self._pending.pop(at, None)
            ahead = range(at + self._step, at + self._step * (self._window + 1), self._step)
            wanted = {i for i in ahead if 0 <= i < len(self._order)}
            for i in [i for i in self._pending if i not in wanted and abs(i - at) > 2]:  # behind, or a jump
                self._pending.pop(i).cancel()
            for i in sorted(wanted - set(self._pending), key=lambda i: abs(i - at)):
                self._pending[i] = self._pool.submit(self._fetch, self._order[i])
        return mine.result() if mine is not None else self._fetch(uid)

    def _turn(self, at: int) -> None:
        """The direction of reading: turned by two moves against it in a row, not by one (two
        threads filling a volume together often arrive one slice out of order)."""
        if self._last >= 0 and at != self._last:
            against = (at > self._last) != (self._step > 0)
            self._against = self._against + 1 if against else 0
            if self._against >= 2 or abs(at - self._last) > self._window:
                self._step, self._against = (1 if at > self._last else -1), 0
        self._last = at
