"""Audit event records.

Event types and outcomes follow DICOM PS3.15 A.5 (the XML rendering and the full coded values
come with the audit issue); a record is validated when it is made so a bad event never reaches
the chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Outcome(IntEnum):
    """PS3.15 A.5.1 EventOutcomeIndicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class EventType(StrEnum):
    APPLICATION_START = "application-start"
    APPLICATION_STOP = "application-stop"
    VAULT_CREATED = "vault-created"
    LOGIN = "login"
    LOGOUT = "logout"
    ACCESS_REFUSED = "access-refused"
    STUDY_LIST = "query-local"
    INSTANCES_READ = "instances-accessed"
    IMPORT = "import"
    QUARANTINE = "quarantine"
    VERIFY = "integrity-check"
    SHRED = "shred"
    KEY_ROTATION = "key-rotation"
    USER_CHANGE = "user-security-attributes-changed"
    ENROLMENT = "mfa-enrolment"
    BREAK_GLASS = "emergency-override"
    SECURITY_ALERT = "security-alert"
    POLICY_CHANGE = "security-configuration"
    PATIENT_RESTRICTION = "patient-restriction"
    PATIENT_RECORD = "patient-record"  # identity conflicts flagged, records reconciled or split
    MEASUREMENT_SAVED = "measurement-saved"  # a reader's measurement or note on an image
    MEASUREMENT_DELETED = "measurement-deleted"
    AUDIT_READ = "audit-log-used"
    NODE_CHANGE = "network-configuration"
    NODE_ECHO = "node-verification"
    QUERY_PACS = "query-pacs"
    RETRIEVE = "instances-transferred"
    SEND = "instances-sent"
    STUDY_PIN = "study-pinned"
    COMMITMENT = "storage-commitment"
    EXPORT = "export"
    BACKUP = "backup"
    RESTORE = "restore"


@dataclass(frozen=True)
class AuditEvent:
    type: EventType
    outcome: Outcome = Outcome.SUCCESS
    user: str | None = None
    studies: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    detail: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, EventType):
            raise ValueError(f"AuditEvent.type must be an EventType, not {self.type!r}")
        if not isinstance(self.outcome, Outcome):
            raise ValueError(f"AuditEvent.outcome must be an Outcome, not {self.outcome!r}")

    def as_record(self) -> dict[str, object]:
        return {
            "type": self.type.value,
            "outcome": int(self.outcome),
            "user": self.user,
            "studies": list(self.studies),
            "patients": list(self.patients),
            "detail": self.detail,
        }
