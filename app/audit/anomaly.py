"""Anomaly rules, evaluated as each event is written; a hit becomes a Security Alert event.

Rules look only at the trail itself (the same encrypted index), so an alert can never disagree
with the evidence. Each alert is raised at most once per user per rule and window, so a night
shift does not bury the privacy officer in repeats.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import sqlcipher3

from app.audit.events import AuditEvent, EventType, Outcome
from app.security.policy import SitePolicy

EXCESSIVE_ACCESS = "excessive access"
OFF_HOURS = "access outside office hours"
RESTRICTED_ATTEMPT = "attempt to open a restricted patient"
OWN_SURNAME = "access to a patient with the user's own surname"
EXPORT_VOLUME = "unusual export volume"


class AnomalyRules:
    def __init__(self, conn: sqlcipher3.Connection, policy: Callable[[], SitePolicy],
                 names_of: Callable[[tuple[str, ...]], Mapping[str, tuple[str, ...]]]) -> None:
        self._conn = conn
        self._policy = policy
        self._names_of = names_of  # the stored names of patients, by their audit references

    def alerts_for(self, event: AuditEvent, at: datetime) -> list[AuditEvent]:
        if event.user is None or event.type is EventType.SECURITY_ALERT:
            return []
        policy = self._policy()
        user = event.user
        found: list[tuple[str, dict[str, object]]] = []
        # Each rule first asks whether it already alerted in its window: the cheap question.
        if event.type is EventType.INSTANCES_READ:
            if not self._alerted(user, EXCESSIVE_ACCESS, at - timedelta(hours=1)):
                patients = self._distinct_patients(user, EventType.INSTANCES_READ, at - timedelta(hours=1),
                                                   policy.anomaly_patients_per_hour + 1)
                if patients > policy.anomaly_patients_per_hour:
                    found.append((EXCESSIVE_ACCESS, {"patients_last_hour": patients,
                                                     "threshold": policy.anomaly_patients_per_hour}))
            if (self._shares_surname(user, event.patients)
                    and not self._alerted(user, OWN_SURNAME, at - timedelta(hours=1))):
                found.append((OWN_SURNAME, {}))
            local = at.astimezone()
            if (not policy.office_hours_start <= local.hour < policy.office_hours_end
                    and not self._alerted(user, OFF_HOURS, at - timedelta(hours=12))):
                found.append((OFF_HOURS, {"local_time": local.strftime("%H:%M")}))
        if (event.type is EventType.EXPORT and event.outcome is Outcome.SUCCESS
                and not self._alerted(user, EXPORT_VOLUME, at - timedelta(days=1))):
            patients = self._distinct_patients(user, EventType.EXPORT, at - timedelta(days=1),
                                               policy.anomaly_exports_per_day + 1)
            if patients > policy.anomaly_exports_per_day:
                found.append((EXPORT_VOLUME, {"patients_exported_last_day": patients,
                                              "threshold": policy.anomaly_exports_per_day}))
        if (event.type is EventType.ACCESS_REFUSED and event.detail.get("why") == "restricted patient"
                and not self._alerted(user, RESTRICTED_ATTEMPT, at - timedelta(minutes=10))):
            found.append((RESTRICTED_ATTEMPT, {}))
        return [AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE, user=user,
                           studies=event.studies, patients=event.patients, detail={"alert": rule, **detail})
                for rule, detail in found]

    def _recent(self, user: str, event_type: EventType, since: datetime) -> tuple[str, tuple[str, ...]]:
        """The WHERE clause (and its index) for one user's events of one type since a moment."""
        return ("json_extract(record, '$.user') = ? AND json_extract(record, '$.type') = ? AND at >= ?",
                (user, event_type.value, since.isoformat(timespec="microseconds")))

    def _distinct_patients(self, user: str, event_type: EventType, since: datetime, enough: int) -> int:
        """How many patients ``user`` opened (or exported) since then, successfully, counting no
        further than ``enough``: the rule runs on every image read and must not slow down with a
        busy reader's hour."""
        where, params = self._recent(user, event_type, since)
        return self._conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT p.value FROM audit, json_each(record, '$.patients') p "
            f"WHERE {where} AND json_extract(record, '$.outcome') = 0 LIMIT ?)",
            (*params, enough)).fetchone()[0]

    def _shares_surname(self, user: str, patients: tuple[str, ...]) -> bool:
        """Whether the user's family name (the last word of their full name) is a patient's (the
        first component of the DICOM name): a relative's chart is the classic snooping case."""
        row = self._conn.execute("SELECT full_name FROM users WHERE name = ?", (user,)).fetchone()
        surname = row[0].split()[-1].casefold() if row and row[0].strip() else ""
        if not surname or not patients:
            return False
        return any(name.split("=")[0].split("^")[0].strip().casefold() == surname
                   for names in self._names_of(patients).values() for name in names)

    def _alerted(self, user: str, rule: str, since: datetime) -> bool:
        where, params = self._recent(user, EventType.SECURITY_ALERT, since)
        rows = self._conn.execute(f"SELECT record FROM audit WHERE {where}", params)
        return any(json.loads(r[0])["detail"].get("alert") == rule for r in rows)
