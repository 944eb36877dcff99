"""Anomaly rules, evaluated as each event is written; a hit becomes a Security Alert event.

Rules look only at the trail itself (the same encrypted index), so an alert can never disagree
with the evidence. Each alert is raised at most once per user per rule and window, so a night
shift does not bury the privacy officer in repeats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlcipher3

from app.audit.events import AuditEvent, EventType, Outcome
from app.security.policy import SitePolicy

EXCESSIVE_ACCESS = "excessive access"
OFF_HOURS = "access outside office hours"
RESTRICTED_ATTEMPT = "attempt to open a restricted patient"


class AnomalyRules:
    def __init__(self, conn: sqlcipher3.Connection, policy: Callable[[], SitePolicy]) -> None:
        self._conn = conn
        self._policy = policy

    def alerts_for(self, event: AuditEvent, at: datetime) -> list[AuditEvent]:
        if event.user is None or event.type is EventType.SECURITY_ALERT:
            return []
        policy = self._policy()
        found: list[tuple[str, dict[str, object]]] = []
        if event.type is EventType.INSTANCES_READ:
            patients = self._distinct_patients(event.user, at - timedelta(hours=1))
            if patients > policy.anomaly_patients_per_hour:
                found.append((EXCESSIVE_ACCESS, {"patients_last_hour": patients,
                                                 "threshold": policy.anomaly_patients_per_hour}))
            local = at.astimezone()
            if not policy.office_hours_start <= local.hour < policy.office_hours_end:
                found.append((OFF_HOURS, {"local_time": local.strftime("%H:%M")}))
        if event.type is EventType.ACCESS_REFUSED and event.detail.get("why") == "restricted patient":
            found.append((RESTRICTED_ATTEMPT, {}))
        window = {EXCESSIVE_ACCESS: timedelta(hours=1), OFF_HOURS: timedelta(hours=12),
                  RESTRICTED_ATTEMPT: timedelta(minutes=10)}
        return [
            AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE, user=event.user,
                       studies=event.studies, patients=event.patients,
                       detail={"alert": rule, **detail})
            for rule, detail in found
            if not self._alerted(event.user, rule, at - window[rule])
        ]

    def _distinct_patients(self, user: str, since: datetime) -> int:
        return self._conn.execute(
            "SELECT count(DISTINCT p.value) FROM audit, json_each(audit.record, '$.patients') p "
            "WHERE audit.at >= ? AND json_extract(audit.record, '$.type') = ? "
            "AND json_extract(audit.record, '$.user') = ?",
            (since.isoformat(timespec="microseconds"), EventType.INSTANCES_READ.value, user),
        ).fetchone()[0]

    def _alerted(self, user: str, rule: str, since: datetime) -> bool:
        rows = self._conn.execute(
            "SELECT record FROM audit WHERE at >= ? AND json_extract(record, '$.type') = ? "
            "AND json_extract(record, '$.user') = ?",
            (since.isoformat(timespec="microseconds"), EventType.SECURITY_ALERT.value, user))
        return any(json.loads(r[0])["detail"].get("alert") == rule for r in rows)
