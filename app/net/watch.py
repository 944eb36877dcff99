"""Watching the PACS: is it there, and if so, the sends that waited for it go out.

The GUI shows a downtime banner from this (reading goes on from the local cache regardless); the
check is a C-ECHO to the site's PACS node, a health check rather than a user's action, so it is
not written to the audit trail each time (what it triggers, the queued sends, is).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from app.background import Periodic, Step


@dataclass(frozen=True)
class PacsStatus:
    node: str | None  # the node watched; None when no PACS node is set
    reachable: bool
    waiting: int  # sends in the outbox
    error: str | None = None


def pacs_job(check: Callable[[], PacsStatus], on_status: Callable[[PacsStatus], None],
             interval: float = 30.0) -> Periodic:
    def setup() -> Step:
        def step(stop: threading.Event) -> str | None:
            status = check()
            on_status(status)
            return status.error

        return step

    return Periodic("pacs-watch", setup, interval=interval, max_backoff=120.0)
