"""The audit trail as people and the repository see it: verify, show, report, forward, reconcile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from app.audit.dicom_xml import HOSTNAME, SOURCE_ID
from app.audit.events import AuditEvent, EventType
from app.audit.log import AuditLog, ChainReport
from app.audit.reconcile import Reconciliation, reconcile
from app.audit.report import AuditQuery, AuditRecord, AuditReport, ReportKind
from app.audit.repository import HALTED_KEY, Forwarder, Repository, SyncStatus
from app.errors import UsageError
from app.security.roles import Action, Duty
from app.store.books import MetaBook
from app.vault.gate import Access, Service, duty, gated, opening


class TrailService(Service):
    @gated(Action.AUDIT_VERIFY)
    def verify(self, door: Access) -> ChainReport:
        with door.store.reading():
            report = door.audit.verify()
            if report.ok:
                with door.store.transaction():
                    door.audit.checkpoint()  # what was verified is now signed
                    door.audit.advance_mark(report)  # and a report checks only what comes after it
        door.record(AuditEvent(EventType.AUDIT_READ, user=door.actor, detail={"verify": report.ok}))
        return report

    @opening
    def record_application(self, door: Access, *, started: bool) -> None:
        """The workstation application (the GUI) starting or stopping, for the audit trail."""
        door.record(AuditEvent(EventType.APPLICATION_START if started else EventType.APPLICATION_STOP,
                               user=SOURCE_ID))

    @gated(Action.AUDIT_READ)
    def show(self, door: Access, query: AuditQuery) -> list[AuditRecord]:
        """The records ``query`` selects, newest first; reading the trail is itself recorded."""
        with door.store.reading():
            records = door.audit.records(query)
        door.record(AuditEvent(EventType.AUDIT_READ, user=door.actor,
                               patients=(query.patient,) if query.patient else (),
                               detail={"records": len(records), **query.audit_detail()}))
        return records

    @gated(Action.AUDIT_READ)
    def report(self, door: Access, kind: ReportKind, query: AuditQuery) -> AuditReport:
        """A patient access or user activity report, headed by whether the chain verified: the
        records after the signed verified mark, walked now (the mark moves on to the head)."""
        kind.check(query)
        with door.store.reading():
            records = door.audit.records(query)
            chain = _since_mark(door)
        door.record(AuditEvent(EventType.AUDIT_READ, user=door.actor,
                               patients=(query.patient,) if query.patient else (),
                               detail={"report": kind.value, "records": len(records),
                                       **query.audit_detail()}))
        return AuditReport(kind, query, records, chain, door.actor, datetime.now(UTC))

    @gated(Action.SITE_POLICY)
    def set_repository(self, door: Access, repository: Repository) -> None:
        """Where the trail is forwarded; setting it again also resumes a sync stopped by a bad certificate."""
        if door.rules.repository is not None:
            raise UsageError("The audit repository is set by the site's managed policy; it cannot be changed "
                             "at the workstation.")
        repository.identity.check()
        with door.store.transaction() as conn:
            repository.save(conn)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "audit_repository": repository.address, "certificate": repository.identity.subject()}))

    @gated(Action.SITE_POLICY)
    def resume_sync(self, door: Access) -> None:
        """Send again after an untrusted certificate stopped the sync, once an administrator has
        checked the repository (the way for a repository the managed policy sets)."""
        with door.store.transaction() as conn:
            MetaBook(conn).delete(HALTED_KEY)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor,
                                   detail={"audit_repository": "sync resumed"}))

    @duty(Duty.FORWARD_AUDIT)
    def forwarder(self, door: Access, *, own_connection: bool = False) -> Forwarder:
        """The sender of the queue, the workstation's own duty; a background thread asks for its
        own connection."""
        return _forwarder(door, own_connection=own_connection)

    @duty(Duty.CHECK_AUDIT)
    def check_new_records(self, door: Access) -> ChainReport:
        """The records added since the signed verified mark, checked and the mark moved on: the
        workstation's own hourly work, so that a patient's access report has little left to walk.
        A break is raised as a security alert (the records stay as they are, for the verify)."""
        with door.store.reading():
            chain = _since_mark(door)
        if not chain.ok:
            door.record(AuditEvent(EventType.SECURITY_ALERT, user=door.actor, detail={
                "audit_chain": "broken", "first_bad_event": chain.first_bad_seq}))
        return chain

    @gated(Action.AUDIT_VERIFY)
    def sync_status(self, door: Access) -> SyncStatus:
        with door.store.reading():
            return _forwarder(door).status()

    @gated(Action.AUDIT_VERIFY)
    def reconcile(self, door: Access, central: Path | Iterable[str]) -> Reconciliation:
        """Compare a copy of what the repository received (its file, or its lines as a client of
        the workstation service sends them) with the local chain."""
        try:
            with (central.open(encoding="utf-8", errors="replace") if isinstance(central, Path)
                  else contextlib.nullcontext(central)) as lines, door.store.reading():
                result = reconcile(lines, door.audit, _forwarder(door).status().sent_seq, HOSTNAME)
        except OSError as exc:
            raise UsageError(f"Could not read the repository's file: {exc.strerror}.") from None
        door.record(AuditEvent(EventType.AUDIT_READ, user=door.actor,
                               detail={"reconcile": result.ok, "received": result.received}))
        return result


def _forwarder(door: Access, *, own_connection: bool = False) -> Forwarder:
    conn = door.store.reader() if own_connection else door.store.conn
    return Forwarder(AuditLog(conn, door.audit.signing_key), conn, door.rules.repository)


def _since_mark(door: Access) -> ChainReport:
    """The chain after the signed verified mark, checked, and the mark moved on to its head when
    it held (inside the caller's reading)."""
    chain = door.audit.verify_since_mark()
    if chain.ok:
        with door.store.transaction():
            door.audit.advance_mark(chain)
    return chain
