"""What import runs share: the threads, the lookup connection and the staging folder, and the
read-ahead of the entries a run imports."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlcipher3

from app.store.core import StoreCore
from app.store.journal import JOURNAL_CONTEXT, Indexer, Journal
from app.store.patients import Demographics
from app.store.staging import Staging
from app.store.verdicts import Known

IO_THREADS = 4
READ_AHEAD = 8

Entry = tuple[str, Callable[[], bytes]]
Indexing = Callable[[sqlcipher3.Connection, list[Any]], Callable[[], None]]


class InMemory:
    """An entry's bytes already in memory (received, generated, unpacked): handed over as they
    are, on the run's own thread, where a reader thread would only add a wake-up."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)  # (the object itself when it is bytes: no copy)

    def __call__(self) -> bytes:
        return self.data


def read_ahead(entries: Iterable[Entry],
               pool: ThreadPoolExecutor) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Read the next few files on threads while the current one is parsed (bounded memory)."""
    window: deque[tuple[str, Callable[[], bytes]]] = deque()
    for label, read in entries:
        window.append((label, read if isinstance(read, InMemory) else pool.submit(read).result))
        if len(window) > READ_AHEAD:
            yield window.popleft()
    yield from window


@dataclass
class Unindexed:
    """What a journaled receiver answered and has not indexed yet: a later receive is judged
    against it as against the index (a clash with an instance answered a moment ago is refused)."""

    known: dict[str, Known] = field(default_factory=dict)  # SOP Instance UID -> as the index will hold it
    owners: dict[str, Demographics] = field(default_factory=dict)  # study UID -> whose study it is

    def forget(self, known: dict[str, Known], owners: dict[str, Demographics]) -> None:
        """Once indexed, the index answers for them (unless a later receive took their place)."""
        for uid, judged in known.items():
            if self.known.get(uid) is judged:
                del self.known[uid]
        for uid, owner in owners.items():
            if self.owners.get(uid) is owner:
                del self.owners[uid]


@dataclass
class Workers:
    """The threads, the lookup connection and the staging folder a run uses; one set per run, or
    kept open by a receiver that imports many small runs (the storage SCP), so none pays for
    starting them."""

    lookup: sqlcipher3.Connection  # its own connection: WAL lets it read while the committer writes
    staging: Staging  # where sealed blobs wait for their batch's commit
    io: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(IO_THREADS))
    readers: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))
    committer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    # One run at a time on these (the receiver's associations take turns, as they did behind the
    # write lock): the lookup connection is not shared between threads at once.
    busy: threading.Lock = field(default_factory=threading.Lock)
    indexer: Indexer[Any] | None = None  # the storage SCP's: runs are journaled, then indexed behind
    unindexed: Unindexed = field(default_factory=Unindexed)

    @classmethod
    def open(cls, core: StoreCore, *, journaled: Indexing | None = None) -> Workers:
        """``journaled``: each run is answered once journaled, and indexed behind by this."""
        key = core.kept_data_key(JOURNAL_CONTEXT) if journaled else b""
        with core.write_lock():  # briefly: no sweep may see the staging folder before its lease
            staging = Staging.open(core.home)
        indexer = Indexer(Journal(staging.folder, key), core, journaled) if journaled else None
        return cls(core.reader(), staging, indexer=indexer)

    def flush(self) -> None:
        """Wait until everything journaled is indexed."""
        if self.indexer is not None:
            self.indexer.flush()

    def close(self) -> None:
        if self.indexer is not None:
            self.indexer.close()
        for pool in (self.io, self.readers, self.committer):
            pool.shutdown()
        self.lookup.close()
        self.staging.close(keep=self.indexer is not None and self.indexer.failed)
