"""The audit trail: its chain check, listings and reports, and its copy in the central audit
repository (where it goes, sending it, and comparing what arrived with what is here)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from app.audit.dicom_xml import message_of
from app.audit.events import EventType
from app.audit.report import AuditQuery, AuditRecord, ReportKind
from app.audit.repository import SyncStatus
from app.cli.credentials import current_session, open_vault
from app.cli.output import EXIT_OK, Output, table
from app.cli.parsing import Command, Commands
from app.errors import UsageError
from app.security.tls import TlsIdentity


def cmd_audit_verify(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        report = vault.trail.verify(current_session(vault))
    out.emit({"events": report.events, "ok": report.ok, "first_bad_seq": report.first_bad_seq},
             f"Audit trail: {report.events} event(s), intact." if report.ok else
             f"Audit trail damaged: the chain breaks at event {report.first_bad_seq}.")
    return EXIT_OK if report.ok else 4


def _moment(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date or date-time in local time (a bare date as an --until means the whole day)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"'{text}' is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM).") from None
    if end_of_day and len(text) == 10:
        moment += timedelta(days=1)
    return moment.astimezone() if moment.tzinfo is None else moment


def _audit_query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(user=args.user, patient=args.patient,
                      event_type=EventType(args.type) if getattr(args, "type", None) else None,
                      since=_moment(args.since) if args.since else None,
                      until=_moment(args.until, end_of_day=True) if args.until else None,
                      limit=getattr(args, "limit", None))


def _record_json(record: AuditRecord) -> dict[str, object]:
    data = {**asdict(record), "at": record.at.isoformat()}
    del data["message"]  # (audit show --xml prints it)
    return data


def cmd_audit_show(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        records = vault.trail.show(current_session(vault), _audit_query(args))
    if args.xml:  # one message per line and nothing else: for a repository or a validator
        messages = [message_of(r) for r in records]
        if out.as_json:
            out.emit(messages, "")
        else:
            sys.stdout.write("".join(f"{message}\n" for message in messages))
        return EXIT_OK
    headers = ["Seq", "Local time", "Event", "Outcome", "User", "Patients"]
    out.emit([_record_json(r) for r in records], lambda: table(
        [[str(r.seq), f"{r.at.astimezone():%Y-%m-%d %H:%M:%S}", r.type, r.outcome_text, r.user or "",
          " ".join(r.patients)] for r in records], headers))
    return EXIT_OK


def cmd_audit_report(args: argparse.Namespace, out: Output) -> int:
    if bool(args.patient) == bool(args.user):
        raise UsageError("Name either --patient ID (who accessed this patient) or --user NAME "
                         "(what this user did).")
    kind = ReportKind.PATIENT if args.patient else ReportKind.USER
    with open_vault(args) as vault:
        report = vault.trail.report(current_session(vault), kind, _audit_query(args))
    if args.out:
        report.write(args.out)
    data = {"title": report.title, "chain_ok": report.chain_ok, "out": str(args.out) if args.out else None,
            "records": [_record_json(r) for r in report.records]}
    out.emit(data, lambda: "\n".join([report.title, *report.header_lines()]) + (
        f"\nWritten to {args.out}." if args.out else "\n" + table(report.rows(), list(report.COLUMNS))))
    return EXIT_OK


def cmd_audit_repository_set(args: argparse.Namespace, out: Output) -> int:
    from app.audit.repository import Repository

    identity = TlsIdentity.from_files(args.ca, args.cert, args.key)
    repository = Repository(args.host, args.port, identity, args.server_name or "")
    with open_vault(args) as vault:
        vault.trail.set_repository(current_session(vault), repository)
    out.emit({"repository": repository.address, "certificate": identity.subject()},
             f"Audit repository set to {repository.address} (this workstation is "
             f"{identity.subject()}). The certificate and key are now kept in the vault; "
             "the files can be removed.")
    return EXIT_OK


def _sync_status_text(status: SyncStatus) -> str:
    if not status.configured:
        return "No audit repository is set."
    state = f"stopped: {status.halted}" if status.halted else "active"
    return (f"Audit repository {status.address} ({state}); {status.sent_seq} of {status.head_seq} "
            f"event(s) confirmed, {status.pending} queued.")


def cmd_audit_repository_resume(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.trail.resume_sync(current_session(vault))
    out.emit({"resumed": True}, "Audit sync resumed: queued events go out at the next sync.")
    return EXIT_OK


def cmd_audit_repository_show(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        status = vault.trail.sync_status(current_session(vault))
    out.emit({**asdict(status), "pending": status.pending}, _sync_status_text(status))
    return EXIT_OK


def cmd_audit_sync(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        if args.watch:
            from app.audit.repository import sync_job

            def report(status: SyncStatus, error: str | None) -> None:
                out.note(f"{datetime.now():%H:%M:%S} {error or _sync_status_text(status)}")

            worker = sync_job(partial(vault.trail.forwarder, own_connection=True), report)
            worker.start()
            try:
                while True:
                    time.sleep(3600)
            finally:
                worker.stop()
        result = vault.trail.forwarder().drain()
    status = result.status
    out.emit({"sent": result.sent, **asdict(status), "pending": status.pending},
             f"Sent {result.sent} event(s). {_sync_status_text(status)}")
    return EXIT_OK


def cmd_audit_reconcile(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.trail.reconcile(current_session(vault), args.central)

    def text() -> str:
        lines = [f"The repository holds {result.received} message(s) from this workstation "
                 f"({result.duplicates} duplicate(s) after reconnects, {result.checkpoints} "
                 f"signed checkpoint(s)); {result.pending} event(s) are not yet sent."]
        findings = [("missing there", result.missing), ("altered there", result.altered),
                    ("there but no longer here (local tail cut?)", result.unknown),
                    ("checkpoints that do not match or verify", result.bad_checkpoints)]
        for label, seqs in findings:
            if seqs:
                shown = ", ".join(map(str, seqs[:20])) + (" ..." if len(seqs) > 20 else "")
                lines.append(f"{len(seqs)} event(s) {label}: {shown}")
        lines.append("The repository agrees with the local trail." if result.ok else
                     "The repository and the local trail disagree.")
        return "\n".join(lines)

    out.emit({**asdict(result), "ok": result.ok}, text)
    return EXIT_OK if result.ok else 4



# ---------------------------------------------------------------------------- parsers
def _filters() -> argparse.ArgumentParser:
    """The options that choose audit records, shared by `audit show` and `audit report`."""
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--user", help="one user's events")
    filters.add_argument("--patient", metavar="ID", help="events about one patient (by Patient ID)")
    filters.add_argument("--since", metavar="DATE", help="from this local date or date-time")
    filters.add_argument("--until", metavar="DATE", help="up to this local date (inclusive) or date-time")
    return filters


def _repository_parser(audit: Commands) -> None:
    repository = audit.group("repository", "the central audit repository", "repository_command")
    p = repository.add("set", cmd_audit_repository_set,
                       "where the trail goes: syslog over mutual TLS (admin)")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=6514)
    p.add_argument("--ca", type=Path, required=True, help="PEM file of the CA(s) the repository's "
                   "certificate must chain to")
    p.add_argument("--cert", type=Path, required=True, help="this workstation's PEM certificate")
    p.add_argument("--key", type=Path, required=True, help="this workstation's PEM private key")
    p.add_argument("--server-name", help="the name in the repository's certificate, if not HOST")
    repository.add("show", cmd_audit_repository_show, "the repository and how much is queued")
    repository.add("resume", cmd_audit_repository_resume, "send again after an untrusted certificate "
                   "stopped the sync (once the repository was checked)")


def _audit_parser(command: Command) -> None:
    audit = command.group("audit_command")
    audit.add("verify", cmd_audit_verify, "check the audit trail's hash chain")
    filters = _filters()
    p = audit.add("show", cmd_audit_show, "list audit records, newest first", parents=[filters])
    p.add_argument("--type", choices=[t.value for t in EventType], help="one kind of event")
    p.add_argument("--xml", action="store_true",
                   help="print their DICOM PS3.15 audit messages instead, one XML document per line")
    p.add_argument("--limit", type=int, default=100)
    p = audit.add("report", cmd_audit_report, "patient access or user activity report", parents=[filters])
    p.add_argument("--out", type=Path, metavar="FILE", help="write it as CSV or PDF (by extension)")
    _repository_parser(audit)
    p = audit.add("sync", cmd_audit_sync, "send queued events to the central repository")
    p.add_argument("--watch", action="store_true", help="keep sending as events arrive")
    p = audit.add("reconcile", cmd_audit_reconcile,
                  "compare what the repository received with the local trail")
    p.add_argument("--central", type=Path, required=True,
                   help="the repository's messages, one RFC 5424 message per line")


PARSERS: dict[str, Callable[[Command], object]] = {"audit": _audit_parser}
