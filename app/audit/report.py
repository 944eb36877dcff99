"""What the privacy officer asks of the trail: filtered listings and the two standard reports.

A *patient access report* answers "who looked at this patient, when, and what did they do"; a
*user activity report* answers "what did this person do". Both are plain tables that go out as
CSV (for a spreadsheet or a case file) or PDF (for a letter), headed by the question they answer
and the state of the chain, so a printout says whether the evidence was intact when it was made.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.audit.events import EventType, Outcome
from app.documents import tabular_pdf
from app.errors import UsageError
from app.store import audit_lookup

OUTCOMES = {int(o): o.name.replace("_", " ").lower() for o in Outcome}


@dataclass(frozen=True)
class AuditQuery:
    user: str | None = None
    patient: str | None = None
    event_type: EventType | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = 1000

    def __post_init__(self) -> None:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("AuditQuery times must be timezone-aware")
        if self.since and self.until and self.since >= self.until:
            raise UsageError("The report's start must be before its end.")

    def where(self) -> tuple[str, list[object]]:
        clauses = ["1"]
        params: list[object] = []
        if self.user:
            clauses.append("json_extract(record, '$.user') = ?")
            params.append(self.user)
        if self.event_type:
            clauses.append("json_extract(record, '$.type') = ?")
            params.append(self.event_type.value)
        if self.since:
            clauses.append("at >= ?")
            params.append(self.since.astimezone(UTC).isoformat(timespec="microseconds"))
        if self.until:
            clauses.append("at < ?")
            params.append(self.until.astimezone(UTC).isoformat(timespec="microseconds"))
        if self.patient:
            clauses.append(audit_lookup.OF_PATIENT)  # through its lookup: flat however long the trail
            params.append(self.patient)
        return " AND ".join(clauses), params

    def describe(self) -> str:
        parts = [f"user {self.user}" if self.user else "", f"patient {self.patient}" if self.patient else "",
                 f"event {self.event_type.value}" if self.event_type else "",
                 f"from {self.since:%Y-%m-%d %H:%M}" if self.since else "",
                 f"until {self.until:%Y-%m-%d %H:%M}" if self.until else ""]
        return ", ".join(p for p in parts if p) or "all events"

    def audit_detail(self) -> dict[str, object]:
        """The filter as it goes into the trail's own record of the reading."""
        return {k: v for k, v in {"user": self.user, "patient": self.patient,
                                  "event_type": self.event_type.value if self.event_type else None,
                                  "since": self.since.isoformat() if self.since else None,
                                  "until": self.until.isoformat() if self.until else None}.items() if v}


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    type: str
    outcome: int
    user: str | None
    patients: tuple[str, ...]
    studies: tuple[str, ...]
    detail: dict[str, object] = field(default_factory=dict)
    # its PS3.15 message as stored ('' for records written before messages were kept)
    message: str = field(default="", repr=False, compare=False)

    @classmethod
    def from_row(cls, seq: int, at: str, record: Mapping[str, Any], message: str = "") -> AuditRecord:
        """One row of the trail; ``record`` is its JSON, as decoded."""
        return cls(seq, datetime.fromisoformat(at), str(record["type"]), int(record["outcome"]),
                   record.get("user"), tuple(record.get("patients") or ()),
                   tuple(record.get("studies") or ()), dict(record.get("detail") or {}), message)

    @property
    def outcome_text(self) -> str:
        return OUTCOMES.get(self.outcome, str(self.outcome))

    def detail_text(self) -> str:
        return "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(self.detail.items()))


class ReportKind(StrEnum):
    PATIENT = "patient access"
    USER = "user activity"

    def check(self, query: AuditQuery) -> None:
        if self is ReportKind.PATIENT and not query.patient:
            raise UsageError("A patient access report needs the patient's ID.")
        if self is ReportKind.USER and not query.user:
            raise UsageError("A user activity report needs the user's name.")


@dataclass(frozen=True)
class ChainReport:
    """What a walk of the hash chain found, and which records it covered: a report walks only the
    records after the signed verified mark (:meth:`app.audit.log.AuditLog.verify_since_mark`)."""

    events: int  # records walked
    ok: bool
    first_bad_seq: int | None
    checkpoints: int = 0
    start: int = 1  # the first record walked; those before it were verified when the mark was set
    full_at: str = ""  # ISO UTC: when the records before ``start`` were last verified in a whole-chain walk
    head_hash: str = ""  # of the last record walked (the mark's hash at start - 1 when none)
    mark_refused: bool = False  # a mark whose signature did not verify: ignored, the whole chain walked

    @property
    def head(self) -> int:
        return self.start + self.events - 1

    def coverage(self) -> str:
        """One sentence for a report's header: what was verified, and what rests on the mark."""
        if not self.ok:
            return ("WARNING: the audit trail failed verification when this report was made "
                    f"(first bad event {self.first_bad_seq}).")
        refused = (" The verified mark held was not signed by this workstation's current key (altered, or "
                   "made before a restore): it was ignored.") if self.mark_refused else ""
        if self.start == 1:
            return (f"Audit trail verified intact when this report was made: the whole chain, {self.events} "
                    f"event(s).{refused}")
        since = (f"events {self.start}-{self.head} were checked now" if self.events
                 else "no event was added since the last check")
        return (f"Audit trail verified intact when this report was made: {since}; events 1-{self.start - 1} "
                "are covered by this workstation's signed mark of earlier checks (the whole chain was last "
                f"checked on {self.full_at[:16].replace('T', ' ')} UTC). A change to those earlier events "
                "since then is found by a check of the whole chain ('custodian audit verify').")


@dataclass(frozen=True)
class AuditReport:
    kind: ReportKind
    query: AuditQuery
    records: list[AuditRecord]
    chain: ChainReport
    made_by: str
    made_at: datetime

    @property
    def chain_ok(self) -> bool:
        return self.chain.ok

    @property
    def title(self) -> str:
        subject = {ReportKind.PATIENT: self.query.patient, ReportKind.USER: self.query.user}.get(self.kind)
        return f"{self.kind.value.capitalize()} report" + (f": {subject}" if subject else "")

    def header_lines(self) -> list[str]:
        return [f"Selection: {self.query.describe()}",
                f"Made by {self.made_by} on {self.made_at:%Y-%m-%d %H:%M} UTC; {len(self.records)} event(s)",
                self.chain.coverage()]

    COLUMNS = ("Seq", "Time (UTC)", "Event", "Outcome", "User", "Patients", "Studies", "Detail")

    def rows(self) -> list[list[str]]:
        return [[str(r.seq), f"{r.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", r.type, r.outcome_text,
                 r.user or "", " ".join(r.patients), " ".join(r.studies), r.detail_text()]
                for r in self.records]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for line in [self.title, *self.header_lines()]:
            writer.writerow([f"# {line}"])
        writer.writerow(self.COLUMNS)
        writer.writerows(self.rows())
        return buffer.getvalue()

    def to_pdf(self) -> bytes:
        return tabular_pdf(self.title, self.header_lines(), self.COLUMNS, self.rows(),
                           (12, 32, 42, 24, 26, 30, 55, 52))

    def write(self, path: Path) -> None:
        """CSV or PDF by the file's extension."""
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".pdf"):
            raise UsageError(f"A report is written as .csv or .pdf, not '{path.suffix or path.name}'.")
        data = self.to_pdf() if suffix == ".pdf" else self.to_csv().encode("utf-8")
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"The report could not be written to {path}: {exc.strerror}.") from None

