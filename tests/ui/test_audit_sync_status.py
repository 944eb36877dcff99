"""The status bar tells the reader whether the audit trail is reaching the central repository."""

from __future__ import annotations

import threading

from pytestqt.qtbot import QtBot

from app.audit.repository import SyncStatus
from app.ui.audit_sync_status import AuditSyncStatus


def _from_worker_thread(label: AuditSyncStatus, status: SyncStatus, error: str | None) -> None:
    thread = threading.Thread(target=label.report, args=(status, error))
    thread.start()
    thread.join()


def test_states_arrive_from_the_worker_thread(qtbot: QtBot) -> None:
    label = AuditSyncStatus()
    qtbot.addWidget(label)
    cases = [
        (SyncStatus(False, None, 0, 5, None), None, "kept locally", False),
        (SyncStatus(True, "audit:6514", 5, 5, None), None, "sent", False),
        (SyncStatus(True, "audit:6514", 5, 9, None), "unreachable (connection refused)", "4 waiting", True),
        (SyncStatus(True, "audit:6514", 5, 9, "untrusted certificate"), "stopped", "sending stopped", True),
    ]
    for status, error, text, warning in cases:
        _from_worker_thread(label, status, error)
        qtbot.waitUntil(lambda text=text: label.text().endswith(text))
        assert label.property("warning") is warning
        assert (error or "") in label.toolTip()
