"""The status-bar note on the audit trail's way to the central repository.

The forwarding itself runs in the core's background worker; this only shows its state, which
arrives from that worker's thread and is handed to the GUI thread by a queued signal.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from app.audit.repository import SyncStatus
from app.ui.bridge import Bridge


class AuditSyncStatus(QLabel):
    def __init__(self) -> None:
        super().__init__("Audit trail: starting")
        self._bridge = Bridge(self._show, self)

    def report(self, status: SyncStatus, error: str | None) -> None:
        """Called from the worker thread."""
        self._bridge.post(status, error)

    def _show(self, status: SyncStatus, error: str | None) -> None:
        if not status.configured:
            text, tip = "Audit trail: kept locally", "No central audit repository is set."
        elif status.halted:
            text, tip = "Audit trail: sending stopped", error or status.halted
        elif error:
            text, tip = f"Audit trail: {status.pending} waiting", error
        else:
            text, tip = "Audit trail: sent", f"Every event has reached {status.address}."
        self.setText(text)
        self.setToolTip(tip)
        self.setProperty("warning", bool(status.configured and (status.halted or error)))
        self.style().polish(self)
