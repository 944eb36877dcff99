"""The command line: Custodian's scripting and operations surface (see CONTRACT.md).

Commands parse arguments, gather credentials (environment or prompt), call the vault and print
its answer; they hold no logic of their own. Errors become one plain sentence on stderr and
the contract's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

from app import __version__
from app.audit.dicom_xml import message_of
from app.audit.events import EventType
from app.audit.report import AuditQuery, AuditRecord, ReportKind
from app.audit.repository import SyncStatus
from app.errors import CustodianError, NotAuthenticated, UsageError
from app.imaging.hanging import LAYOUTS
from app.media.disclosures import Delivery, IdentityCheck, MediaKind, Purpose, RecipientKind
from app.net.nodes import Node
from app.paths import resolve_home
from app.security import process, totp
from app.security.keys import PASSPHRASE_FALLBACK_NOTICE
from app.security.policy import SitePolicy
from app.security.roles import parse_role
from app.security.sessions import Session
from app.security.tls import TlsIdentity
from app.store.records import ImportReport
from app.store.vault import Vault

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTLY = 0, 1, 2, 5


# ---------------------------------------------------------------------------- credentials
def _interactive() -> bool:
    return sys.stdin.isatty()


def _secret(env: str, prompt: str, *, confirm: bool = False) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    if not _interactive():
        return None
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != value:
        raise UsageError("The two entries do not match.")
    return value or None


def _plain(env: str, prompt: str) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    return input(prompt).strip() or None if _interactive() else None


def passphrase_source() -> str | None:
    return _secret("CUSTODIAN_PASSPHRASE", "Vault passphrase: ")


# ---------------------------------------------------------------------------- output
class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: object, text: str | Callable[[], str]) -> None:
        if self.as_json:
            print(json.dumps(data, indent=1, default=str))
        else:
            print(text() if callable(text) else text)

    @staticmethod
    def note(message: str) -> None:
        print(message, file=sys.stderr)


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when a person is watching; nothing in scripts."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- vault access
def open_vault(args: argparse.Namespace) -> Vault:
    vault = Vault.open(resolve_home(args.home), passphrase_source)
    for notice in vault.notices:
        print(notice, file=sys.stderr)
    return vault


def current_session(vault: Vault) -> Session:
    return vault.resume(vault.load_token())


# ---------------------------------------------------------------------------- commands
def _key_protection(args: argparse.Namespace, out: Output) -> tuple[bool, str | None]:
    """Where a new (or restored) vault's master key goes, and the passphrase if it is wrapped."""
    use_keyring = {"auto": None, "keyring": True, "passphrase": False}[args.key_storage]
    if use_keyring is None:
        from app.security.keys import keyring_usable

        use_keyring = keyring_usable()
    if use_keyring:
        return True, None
    out.note(PASSPHRASE_FALLBACK_NOTICE)
    passphrase = _secret("CUSTODIAN_PASSPHRASE", "New vault passphrase: ", confirm=True)
    if not passphrase:
        raise UsageError("Set CUSTODIAN_PASSPHRASE or run this interactively to choose one.")
    return False, passphrase


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    home = resolve_home(args.home)
    if Vault.exists(home):
        raise CustodianError(f"A vault already exists in {home}; it was left untouched.")
    password = _secret("CUSTODIAN_PASSWORD", f"Password for {args.admin}: ", confirm=True)
    if not password:
        raise UsageError("The administrator needs a password (CUSTODIAN_PASSWORD or the prompt).")
    use_keyring, passphrase = _key_protection(args, out)
    vault, enrolment = Vault.create(home, admin=args.admin, password=password,
                                    passphrase=passphrase, use_keyring=use_keyring)
    vault.close()
    data = {"home": str(home), "admin": args.admin, "key_storage": vault.key_mode,
            "totp_uri": enrolment.totp_uri, "recovery_codes": enrolment.recovery_codes}
    out.emit(data, lambda: (
        f"Vault created in {home} (master key in the {vault.key_mode}).\n"
        f"Add this to the administrator's authenticator app:\n  {enrolment.totp_uri}\n"
        "Recovery codes (each works once; store them offline):\n  "
        + "\n  ".join(enrolment.recovery_codes)))
    return EXIT_OK


def cmd_login(args: argparse.Namespace, out: Output) -> int:
    user = args.user or _plain("CUSTODIAN_USER", "User: ")
    password = _secret("CUSTODIAN_PASSWORD", "Password: ")
    code = _plain("CUSTODIAN_TOTP", "Authenticator code: ")
    if not (user and password and code):
        raise UsageError("Login needs a user, a password and a code (CUSTODIAN_USER, "
                         "CUSTODIAN_PASSWORD, CUSTODIAN_TOTP or the prompts).")
    with open_vault(args) as vault:
        token, session = vault.login(user, password, code)
        previous = vault.load_token()
        if previous:  # one person at a time on this workstation: the login ends the last session
            with contextlib.suppress(NotAuthenticated):
                vault.logout(vault.resume(previous))
        vault.save_token(token)
    expires = datetime.fromtimestamp(session.expires_at, UTC).isoformat(timespec="seconds")
    out.emit({"user": session.user.name, "role": session.user.role.value, "expires_at": expires},
             f"Logged in as {session.user.name} ({session.user.role.value}); "
             f"the session ends at the latest at {expires}.")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        with contextlib.suppress(NotAuthenticated):  # already over; the token goes either way
            vault.logout(current_session(vault))
        vault.clear_token()
    out.emit({"logged_out": True}, "Logged out.")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = vault.whoami(current_session(vault))
    user = session.user
    out.emit({"user": user.name, "role": user.role.value, "needs_enrolment": session.needs_enrolment},
             f"{user.name} ({user.role.value})"
             + (" — set up the authenticator again: custodian enrol" if session.needs_enrolment else ""))
    return EXIT_OK


def cmd_enrol(args: argparse.Namespace, out: Output) -> int:
    """Set up a new authenticator entry (after a recovery-code login, or a lost phone)."""
    if not _interactive():
        raise UsageError("Setting up an authenticator needs a person at the keyboard: run it in a terminal.")
    with open_vault(args) as vault:
        session = current_session(vault)
        enrolment = vault.begin_reenrolment(session)
        print(f"Add this entry to your authenticator app:\n  {enrolment.totp_uri}")
        code = input("Code shown by the app for the new entry: ").strip()
        vault.finish_reenrolment(session, enrolment, code)
    out.emit({"user": enrolment.user.name, "recovery_codes": enrolment.recovery_codes},
             "Authenticator set up. New recovery codes (each works once; the old ones no longer do):\n  "
             + "\n  ".join(enrolment.recovery_codes))
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace, out: Output) -> int:
    old = _secret("CUSTODIAN_PASSWORD", "Current password: ")
    new = _secret("CUSTODIAN_NEW_PASSWORD", "New password: ", confirm=True)
    if not (old and new):
        raise UsageError("Give the current and the new password (CUSTODIAN_PASSWORD and "
                         "CUSTODIAN_NEW_PASSWORD, or the prompts).")
    with open_vault(args) as vault:
        vault.change_password(current_session(vault), old, new)
    out.emit({"password_changed": True}, "Password changed.")
    return EXIT_OK


def cmd_policy_show(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        current_session(vault)
        policy, managed = asdict(vault.policy), vault.managed_settings
    out.emit(policy, lambda: "\n".join(f"{k.replace('_', ' ')}: {v}"
                                       + (" (site-managed)" if k in managed else "")
                                       for k, v in policy.items()))
    return EXIT_OK


def cmd_policy_sign(args: argparse.Namespace, out: Output) -> int:
    from app.security import managed_policy

    try:
        settings = json.loads(Path(args.settings).read_text())
        key = Path(args.key).read_bytes()
    except (OSError, ValueError) as exc:
        raise UsageError(f"The settings (a JSON object) or the key could not be read: {exc}") from None
    if not isinstance(settings, dict):
        raise UsageError("The settings file must hold one JSON object of site policy settings.")
    SitePolicy().under(managed_policy.split(settings).settings)  # refuse what a workstation would refuse
    Path(args.out).write_bytes(managed_policy.sign(settings, key))
    out.emit({"out": args.out, "settings": sorted(settings)},
             f"Signed site policy written to {args.out}; install it as "
             f"{managed_policy.SYSTEM_DIR / managed_policy.POLICY_FILE}.")
    return EXIT_OK


def cmd_policy_set(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        policy = asdict(vault.set_policy(current_session(vault), args.name, args.value))
    out.emit(policy, f"Site policy: {args.name} is now {policy[args.name]}.")
    return EXIT_OK


def cmd_restrict(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.restrict_patient(current_session(vault), args.patient_id, not args.lift, args.issuer)
    state = "lifted" if args.lift else "in force"
    out.emit({"patient_id": args.patient_id, "restricted": not args.lift},
             f"Restriction {state} for that patient.")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        moved = vault.reconcile_patients(current_session(vault), args.study_uid, args.into)
    out.emit({"study_uid": args.study_uid, "into": args.into, "studies_moved": moved},
             f"{moved} stud{'y' if moved == 1 else 'ies'} now filed under the patient of study "
             f"{args.into}.")
    return EXIT_OK


def cmd_break_glass(args: argparse.Namespace, out: Output) -> int:
    code = _plain("CUSTODIAN_TOTP", "Authenticator code: ")
    if not code:
        raise UsageError("Break-glass needs your authenticator code (CUSTODIAN_TOTP or the prompt).")
    with open_vault(args) as vault:
        until = vault.break_glass(current_session(vault), args.study_uid, args.reason, code)
    expires = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
    out.emit({"study_uid": args.study_uid, "expires_at": expires},
             f"Emergency access granted until {expires}. It is recorded and the privacy officer is alerted.")
    return EXIT_OK


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, _progress("Importing") as update:
        report = vault.import_paths(current_session(vault), [Path(p) for p in args.paths], update)
    return _import_result(report, out)


def _import_result(report: ImportReport, out: Output) -> int:
    def text() -> str:
        lines = [f"Imported {report.imported} instance(s) into {len(report.studies)} study(ies); "
                 f"{report.duplicates} already cached; {len(report.rejected)} rejected."]
        lines += [f"  rejected {r.path}: {r.reason}" for r in report.rejected[:50]]
        if len(report.rejected) > 50:
            lines.append(f"  … and {len(report.rejected) - 50} more (see --json)")
        lines += [f"  warning: {w}" for w in report.warnings]
        return "\n".join(lines)
    out.emit(report.as_dict(), text)
    if report.rejected:
        return EXIT_PARTLY if report.imported or report.duplicates else EXIT_FAILED
    return EXIT_OK


def cmd_import_media(args: argparse.Namespace, out: Output) -> int:
    from app.media.outside import Reconcile

    path = Path(args.path)
    passphrase = os.environ.get("CUSTODIAN_MEDIA_PASSPHRASE") or None
    if passphrase is None and path.suffix.lower() in (".zip", ".iso") and _interactive():
        passphrase = getpass.getpass("Media passphrase (Enter if it has none): ") or None
    with open_vault(args) as vault:
        session = current_session(vault)
        if args.preview:
            found = vault.survey_media(session, path, passphrase)
            rows = [[s.patient_name, s.patient_id + (f" ({s.issuer})" if s.issuer else ""), s.study_date,
                     ",".join(sorted(s.modalities)), s.description, str(s.instances)] for s in found.studies]
            out.emit({"studies": [s.as_json() for s in found.studies], "other_files": found.unreadable},
                     lambda: _table(rows, ["Patient", "ID", "Date", "Mod", "Description", "Img"])
                     if rows else "No DICOM studies found on this media.")
            return EXIT_OK
        if not (args.local_id or args.outside_issuer):
            raise UsageError("Say who the patient is here: --local-id ID (the same patient is known under "
                             "this ID) or --outside-issuer NAME (keep the outside ID, marked as theirs). "
                             "Use --preview to see the media first.")
        reconcile = Reconcile(args.local_id or "", args.outside_issuer or "")
        with _progress("Importing") as update:
            report = vault.import_media(session, path, passphrase, reconcile, update)
    return _import_result(report, out)


def cmd_studies(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        studies = vault.studies(current_session(vault), args.patient)
    hidden = "—"  # a field this role may not see, or a restricted patient
    rows = [[("! " if s.identity_conflict else "") + (s.patient_name or hidden),
             hidden if s.patient_id is None else s.patient_id or "(none)", s.study_date,
             ",".join(s.modalities), s.description, str(s.series), str(s.instances), s.study_uid]
            for s in studies]
    conflicts = any(s.identity_conflict for s in studies)
    out.emit([s.as_dict() for s in studies], lambda: _table(
        rows, ["Patient", "ID", "Date", "Mod", "Description", "Ser", "Img", "Study UID"])
        + ("\n! another patient record has this Patient ID with a different name or birth date: "
           "check, then 'custodian patient reconcile' if they are one person." if conflicts else "")
        if rows else "No studies in the cache.")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, _progress("Verifying") as update:
        report = vault.verify(current_session(vault), update)

    def text() -> str:
        lines = [f"Checked {report.instances} instance(s): {report.ok} intact, "
                 f"{len(report.damaged)} problem(s)."]
        lines += [f"  {d.sop_instance_uid or d.study_uid}: {d.reason}" for d in report.damaged]
        return "\n".join(lines)
    out.emit(report.as_dict(), text)
    return 4 if report.damaged else EXIT_OK


def cmd_shred(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        count = vault.shred(current_session(vault), args.study_uid, args.reason)
    out.emit({"study_uid": args.study_uid, "instances": count},
             f"Study shredded: its key is destroyed and {count} instance(s) removed.")
    return EXIT_OK


def cmd_key_rotate(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        count = vault.rotate_keys(current_session(vault), passphrase_source())
    out.emit({"rewrapped": count}, f"New master key in place; {count} data key(s) re-wrapped.")
    return EXIT_OK


def cmd_user_add(args: argparse.Namespace, out: Output) -> int:
    try:
        role = parse_role(args.role)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    password = _secret("CUSTODIAN_PASSWORD", f"Password for {args.name}: ", confirm=True)
    if not password:
        raise UsageError("The new account needs a password (CUSTODIAN_PASSWORD or the prompt).")
    with open_vault(args) as vault:
        enrolment = vault.add_user(current_session(vault), args.name, role, password, args.full_name)
    out.emit({"user": args.name, "role": role.value, "totp_uri": enrolment.totp_uri,
              "recovery_codes": enrolment.recovery_codes},
             lambda: f"User {args.name} ({role.value}) added.\nAuthenticator:\n  {enrolment.totp_uri}\n"
             "Recovery codes:\n  " + "\n  ".join(enrolment.recovery_codes))
    return EXIT_OK


def cmd_user_disable(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.disable_user(current_session(vault), args.name)
    out.emit({"user": args.name, "disabled": True},
             f"User {args.name} disabled; their sessions have ended.")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        users = vault.list_users(current_session(vault))
    out.emit([{"user": u.name, "role": u.role.value, "disabled": u.disabled} for u in users],
             lambda: _table([[u.name, u.role.value, "disabled" if u.disabled else "active"]
                             for u in users], ["User", "Role", "State"]))
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        report = vault.audit_verify(current_session(vault))
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
        records = vault.audit_show(current_session(vault), _audit_query(args))
    if args.xml:  # one message per line and nothing else: for a repository or a validator
        messages = [message_of(r) for r in records]
        if out.as_json:
            out.emit(messages, "")
        else:
            sys.stdout.write("".join(f"{message}\n" for message in messages))
        return EXIT_OK
    headers = ["Seq", "Local time", "Event", "Outcome", "User", "Patients"]
    out.emit([_record_json(r) for r in records], lambda: _table(
        [[str(r.seq), f"{r.at.astimezone():%Y-%m-%d %H:%M:%S}", r.type, r.outcome_text, r.user or "",
          " ".join(r.patients)] for r in records], headers))
    return EXIT_OK


def cmd_audit_report(args: argparse.Namespace, out: Output) -> int:
    if bool(args.patient) == bool(args.user):
        raise UsageError("Name either --patient ID (who accessed this patient) or --user NAME "
                         "(what this user did).")
    kind = ReportKind.PATIENT if args.patient else ReportKind.USER
    with open_vault(args) as vault:
        report = vault.audit_report(current_session(vault), kind, _audit_query(args))
    if args.out:
        report.write(args.out)
    data = {"title": report.title, "chain_ok": report.chain_ok, "out": str(args.out) if args.out else None,
            "records": [_record_json(r) for r in report.records]}
    out.emit(data, lambda: "\n".join([report.title, *report.header_lines()]) + (
        f"\nWritten to {args.out}." if args.out else "\n" + _table(report.rows(), list(report.COLUMNS))))
    return EXIT_OK


def cmd_audit_repository_set(args: argparse.Namespace, out: Output) -> int:
    from app.audit.repository import Repository

    identity = TlsIdentity.from_files(args.ca, args.cert, args.key)
    repository = Repository(args.host, args.port, identity, args.server_name or "")
    with open_vault(args) as vault:
        vault.set_audit_repository(current_session(vault), repository)
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
        vault.resume_audit_sync(current_session(vault))
    out.emit({"resumed": True}, "Audit sync resumed: queued events go out at the next sync.")
    return EXIT_OK


def cmd_audit_repository_show(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        status = vault.audit_sync_status(current_session(vault))
    out.emit({**asdict(status), "pending": status.pending}, _sync_status_text(status))
    return EXIT_OK


def cmd_audit_sync(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        if args.watch:
            from app.audit.repository import sync_job

            def report(status: SyncStatus, error: str | None) -> None:
                out.note(f"{datetime.now():%H:%M:%S} {error or _sync_status_text(status)}")

            worker = sync_job(partial(vault.audit_forwarder, own_connection=True), report)
            worker.start()
            try:
                while True:
                    time.sleep(3600)
            finally:
                worker.stop()
        result = vault.audit_forwarder().drain()
    status = result.status
    out.emit({"sent": result.sent, **asdict(status), "pending": status.pending},
             f"Sent {result.sent} event(s). {_sync_status_text(status)}")
    return EXIT_OK


def cmd_audit_reconcile(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.audit_reconcile(current_session(vault), args.central)

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


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from app.media import disclosures as d
    from app.media.deid import DeidOptions

    if (args.retain_dates or args.clean_descriptors) and not args.deidentify:
        raise UsageError("--retain-dates and --clean-descriptors are options of --deidentify.")
    request = d.ExportRequest(
        studies=tuple(args.study_uids), recipient_kind=RecipientKind(args.recipient_type),
        recipient=args.recipient, purpose=Purpose(args.purpose),
        identity_check=IdentityCheck(args.identity_check), delivery=Delivery(args.passphrase_delivery),
        media=MediaKind(args.media), out=args.out.resolve(), authorization=args.authorization,
        label=args.label,
        deidentify=DeidOptions(args.retain_dates, args.clean_descriptors) if args.deidentify else None)
    if args.burn is not None and request.media is not MediaKind.ISO:
        raise UsageError("--burn writes a CD image: use it with --media iso.")
    code = _plain("CUSTODIAN_TOTP", "Authenticator code (export needs it again): ")
    if not code:
        raise UsageError("Export needs your authenticator code (CUSTODIAN_TOTP or the prompt).")
    with open_vault(args) as vault, _progress("Writing media") as update:
        result = vault.export(current_session(vault), request, code, update)
        institution = vault.policy.ae_title
    if args.cover_letter:
        try:
            args.cover_letter.write_bytes(d.cover_letter(result, institution))
        except OSError as exc:
            out.note(f"The cover letter could not be written ({exc.strerror}); the passphrase is below.")

    def text() -> str:
        lines = [f"Written {result.out} ({result.instances} instance(s), {result.size / 2**20:.1f} MB), "
                 f"media serial {result.serial}, disclosure #{result.disclosure_id} recorded.",
                 f"SHA-256 {result.sha256}",
                 "", f"Passphrase (shown only now, give it separately from the media):  {result.passphrase}"]
        if result.review:
            lines.append(f"Review before release: {result.review} de-identified image(s) may carry burnt-in "
                         "text (ultrasound, screen captures or marked as such).")
        if result.left_out:
            lines.append(f"Left off the media: {len(result.left_out)} instance(s) that could not be put "
                         "on it:")
            lines += [f"  {uid}: {why}" for uid, why in result.left_out]
        return "\n".join(lines)
    out.emit(result.as_json(), text)
    if args.burn is not None:
        from app.media.writer import burn, burners

        device = args.burn or next(iter(burners()), None)
        if device is None:
            raise CustodianError(f"No CD/DVD writer was found; the image is kept at {result.out} "
                                 "for burning elsewhere.")
        burn(result.out, device)
    return EXIT_OK


def cmd_disclosures(args: argparse.Namespace, out: Output) -> int:
    from app.media.disclosures import Accounting

    with open_vault(args) as vault:
        session = current_session(vault)
        found = vault.disclosures(session, args.patient)
        accounting = Accounting(args.patient, found, session.user.name, datetime.now(UTC))
    if args.pdf:
        try:
            args.pdf.write_bytes(accounting.to_pdf())
        except OSError as exc:
            raise UsageError(f"The accounting could not be written to {args.pdf}: {exc.strerror}.") from None
    out.emit([item.as_json() for item in found], lambda: "\n".join(accounting.header_lines()) + (
        "\n" + _table(accounting.rows(), list(accounting.COLUMNS)) if found else "") + (
        f"\nWritten to {args.pdf}." if args.pdf else ""))
    return EXIT_OK


def cmd_agreement_add(args: argparse.Namespace, out: Output) -> int:
    from app.media.agreements import Agreement, parse_date

    agreement = Agreement(args.recipient, args.reference, parse_date(args.effective, "effective"),
                          parse_date(args.expires, "expiry"))
    with open_vault(args) as vault:
        vault.add_agreement(current_session(vault), agreement)
    out.emit(agreement.as_json(date.today()), f"Agreement with {agreement.recipient} recorded "
             f"({agreement.reference}, {agreement.effective} to {agreement.expires}).")
    return EXIT_OK


def cmd_agreement_revoke(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.revoke_agreement(current_session(vault), args.recipient, args.reason)
    out.emit({"recipient": args.recipient, "revoked": True},
             f"Agreement with {args.recipient} revoked: exports to them are refused from now on.")
    return EXIT_OK


def cmd_agreement_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        found = vault.agreements(current_session(vault))
    today = date.today()
    rows = [[a.recipient, a.reference, a.effective, a.expires, a.status(today)] for a in found]
    out.emit([a.as_json(today) for a in found], lambda: _table(
        rows, ["Business associate", "Agreement", "Effective", "Expires", "Status"])
        if rows else "No business associate agreements are registered.")
    return EXIT_OK


def _tls_identity(args: argparse.Namespace) -> TlsIdentity | None:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    if not any(files):
        return None
    if not all(files):
        raise UsageError("TLS needs all three of --tls-ca, --tls-cert and --tls-key.")
    return TlsIdentity.from_files(*files)


def cmd_node_add(args: argparse.Namespace, out: Output) -> int:
    node = Node(args.name, args.aet, args.host, args.port, _tls_identity(args), args.server_name or "")
    with open_vault(args) as vault:
        vault.add_node(current_session(vault), node)
    out.emit({"node": node.name, "aet": node.ae_title, "host": node.host, "port": node.port,
              "tls": node.tls is not None}, f"PACS node '{node.name}' set: {node.describe()}.")
    return EXIT_OK


def cmd_node_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        nodes = vault.nodes(current_session(vault))
    out.emit([{"node": n.name, "aet": n.ae_title, "host": n.host, "port": n.port, "tls": n.tls is not None}
              for n in nodes],
             lambda: _table([[n.name, n.ae_title, f"{n.host}:{n.port}", "yes" if n.tls else "no"]
                             for n in nodes], ["Node", "AE title", "Address", "TLS"])
             if nodes else "No PACS nodes are set ('custodian node add' adds one).")
    return EXIT_OK


def cmd_node_remove(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.remove_node(current_session(vault), args.name)
    out.emit({"node": args.name, "removed": True}, f"PACS node '{args.name}' removed.")
    return EXIT_OK


def cmd_node_echo(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.echo_node(current_session(vault), args.name)
    out.emit({"node": result.node, "ok": result.ok, "ms": result.ms},
             f"PACS node '{result.node}' answered in {result.ms:.0f} ms.")
    return EXIT_OK


def cmd_query(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        found = vault.query(current_session(vault), args.node, patient_id=args.patient or "",
                            patient_name=args.name or "", study_date=args.date or "",
                            modality=args.modality or "", accession=args.accession or "")
    out.emit([asdict(s) for s in found], lambda: _table(
        [[s.study_date, s.patient_id or "—", s.patient_name or "—", s.modalities, s.description,
          str(s.instances if s.instances is not None else "?"), s.study_uid] for s in found],
        ["Date", "Patient ID", "Name", "Modalities", "Description", "Images", "Study UID"])
        if found else "No studies match.")
    return EXIT_OK


def cmd_retrieve(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, _progress("Retrieving") as progress:
        report = vault.retrieve(current_session(vault), args.node, args.study_uid,
                                (lambda done, total: progress(done, total or 0)) if progress else None,
                                move=args.move)
    out.emit(asdict(report), report.summary())
    return EXIT_PARTLY if report.refused or report.failed_at_pacs else EXIT_OK


def cmd_send(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, _progress("Sending") as progress:
        result = vault.send(current_session(vault), args.node, args.study_uid, progress)
    report = result.report
    data = {"node": args.node, "study_uid": args.study_uid, "sent": len(report.sent),
            "warnings": report.warnings, "failed": [{"sop_instance_uid": k, "reason": v}
                                                    for k, v in report.failed.items()],
            "queued": result.queued}
    if result.queued:
        out.emit(data, f"The PACS node '{args.node}' cannot be reached now ({result.error}). The send "
                       "waits in the outbox and goes out when it is back.")
        return EXIT_PARTLY
    out.emit(data, f"Sent {len(report.sent)} instance(s) to '{args.node}'"
             + (f"; {len(report.failed)} refused: " + "; ".join(sorted(set(report.failed.values())))
                if report.failed else "") + ".")
    return EXIT_PARTLY if report.failed else EXIT_OK


def cmd_outbox(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = current_session(vault)
        waiting = vault.outbox(session)
        sent = vault.flush_outbox() if args.flush else 0
        waiting = vault.outbox(session) if args.flush else waiting
    out.emit({"sent": sent, "waiting": waiting}, lambda: (f"{sent} waiting send(s) went out.\n" if args.flush
                                                          else "") + (_table(
        [[str(w["id"]), str(w["node"]), str(w["study_uid"]), str(w["requested_by"]), str(w["attempts"]),
          str(w["last_error"])] for w in waiting], ["#", "Node", "Study UID", "By", "Tries", "Last error"])
        if waiting else "Nothing is waiting to be sent."))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = current_session(vault)
        if args.pin or args.unpin:
            vault.pin_study(session, args.pin or args.unpin, pinned=bool(args.pin))
        evicted = vault.evict_to_budget() if args.evict else []
        usage = vault.cache_usage(session)
    budget = f"budget {usage['budget_mb']} MB" if usage["budget_mb"] else "no budget set"
    out.emit({**usage, "evicted": evicted},
             f"Cache: {usage['studies']} studies, {int(usage['bytes']) / 1e6:.1f} MB ({budget}); "
             f"{usage['pinned']} pinned" + (f"; {len(evicted)} evicted." if evicted else "."))
    return EXIT_OK


def cmd_scp_tls(args: argparse.Namespace, out: Output) -> int:
    identity = None if args.off else _tls_identity(args)
    if identity is None and not args.off:
        raise UsageError("Give --tls-ca, --tls-cert and --tls-key, or --off.")
    with open_vault(args) as vault:
        vault.set_scp_tls(current_session(vault), identity)
    out.emit({"tls": identity is not None, "certificate": identity.subject() if identity else None},
             f"The storage SCP now requires TLS as {identity.subject()}; senders need a certificate from "
             "the given CA." if identity else "The storage SCP now accepts plain connections.")
    return EXIT_OK


def cmd_scp(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        scp = vault.storage_scp(port=args.port, host=args.host)
        scp.start()
        out.note(f"Storage SCP listening as {vault.policy.ae_title} on port {scp.port}; Ctrl+C stops it.")
        try:
            while True:
                time.sleep(3600)
        finally:
            scp.stop()


def cmd_gui(args: argparse.Namespace, out: Output) -> int:
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    elif not _has_display():
        raise CustodianError("No display is available here: run the workstation on a desktop, "
                             "or render it with --screenshot FILE.")
    from app.ui.application import run_gui

    vault = open_vault(args)
    try:
        if args.emergency:
            vault.enter_emergency_mode()
        try:
            session: Session | None = current_session(vault)
        except NotAuthenticated:
            session = None
            if args.screenshot:
                raise
        return run_gui(vault, session, open_study=args.open, layout=args.layout,
                       screenshot=Path(args.screenshot) if args.screenshot else None)
    finally:
        vault.close()


def _backup_passphrase(confirm: bool) -> str:
    from app.store.backup import check_passphrase

    return check_passphrase(_secret("CUSTODIAN_BACKUP_PASSPHRASE", "Backup passphrase: ", confirm=confirm))


def cmd_backup(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.backup(current_session(vault), Path(args.out).resolve(), _backup_passphrase(True))
    missing = (f" {result.missing} damaged instance(s) had no file to back up: run 'custodian verify'."
               if result.missing else "")
    out.emit({"file": str(result.path), "instances": result.instances, "bytes": result.size,
              "sha256": result.sha256, "missing": result.missing},
             f"Backup written to {result.path}: {result.instances} instance(s), {result.size:,} bytes, "
             f"SHA-256 {result.sha256}. Keep the passphrase apart from the backup.{missing}")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, out: Output) -> int:
    home = resolve_home(args.home)
    if Vault.exists(home):
        raise CustodianError(f"There is already a vault in {home}; restore into an empty folder.")
    source = Path(args.backup)
    if not source.is_file():
        raise UsageError(f"{source} is not a file.")
    passphrase = _backup_passphrase(False)
    use_keyring, vault_passphrase = _key_protection(args, out)
    with Vault.restore(source, home, passphrase, vault_passphrase=vault_passphrase,
                       use_keyring=use_keyring) as vault:
        mode = vault.key_mode
    out.emit({"home": str(home), "key_storage": mode},
             f"Vault restored into {home} (master key in the {mode}). Log in as before, then run "
             "'custodian verify' and 'custodian audit verify'.")
    return EXIT_OK


def cmd_selftest(args: argparse.Namespace, out: Output) -> int:
    from app import selftest
    from app.ui.health import qt_check

    checks = selftest.run(resolve_home(args.home), passphrase_source, network=not args.offline, qt=qt_check)
    failed = [c for c in checks if c.result == selftest.FAIL]
    out.emit({"ok": not failed, "checks": [c.as_dict() for c in checks]}, selftest.report(checks))
    if any(c.group == "vault" and c.name == "index integrity" for c in failed):
        return 4  # integrity failure found
    return EXIT_FAILED if failed else EXIT_OK


def cmd_compliance_report(args: argparse.Namespace, out: Output) -> int:
    from app import compliance

    results = Path(args.results) if args.results else Path("test-results.xml")
    listed, states = compliance.report(results if args.results or results.exists() else None, Path(args.out))
    counts = {state: list(states.values()).count(state) for state in sorted(set(states.values()))}
    out.emit({"out": args.out, "items": states},
             f"Compliance report written to {args.out}: {len(listed)} item(s), "
             + ", ".join(f"{n} {state}" for state, n in counts.items()) + ".")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from app.demo.home import make_demo_home

    demo = make_demo_home(Path(args.home) if args.home else None)
    out.emit(demo.as_dict(), demo.describe)
    if args.no_gui:
        return EXIT_OK
    from app.ui.application import run_gui

    with Vault.open(demo.home, lambda: demo.passphrase) as vault:
        if _has_display():
            return run_gui(vault, None, demo_codes=demo.current_codes)
        # No screen (a server, a container): show what the radiologist would see, as a picture.
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        rad = next(u for u in demo.users if u.name == "rad")
        _, session = vault.login(rad.name, rad.password, totp.current_code(rad.totp_secret))
        shot = demo.home.parent / "custodian-demo.png"
        result = run_gui(vault, session, open_study=demo.featured, layout="1x2",
                         screenshot=shot)
        out.note(f"No display here: the workstation was rendered to {shot} instead.")
        return result


def _has_display() -> bool:
    if sys.platform != "linux" or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    def globals_parser(defaults: bool) -> argparse.ArgumentParser:
        # Global options work before or after the command; only the top level sets defaults,
        # so a subcommand does not reset what was given before it.
        p = argparse.ArgumentParser(add_help=False)
        kw: dict[str, object] = {} if defaults else {"default": argparse.SUPPRESS}
        p.add_argument("--home", help="data directory (default: $CUSTODIAN_HOME or the user data dir)",
                       **kw)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout", **kw)
        p.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors", **kw)
        return p

    common = globals_parser(defaults=False)
    parser = argparse.ArgumentParser(prog="custodian", parents=[globals_parser(defaults=True)],
                                     description="Custodian diagnostic DICOM workstation.")
    parser.add_argument("--version", action="version", version=f"custodian {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., int], help_text: str,
            target: argparse._SubParsersAction = sub,
            parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
        p = target.add_parser(name, parents=[common, *(parents or [])], help=help_text,
                              description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "create a new vault and its first administrator")
    p.add_argument("--admin", required=True, metavar="NAME")
    p.add_argument("--key-storage", choices=["auto", "keyring", "passphrase"], default="auto",
                   help="where the master key lives (auto: the OS keyring when one is usable)")
    p = add("login", cmd_login, "log in with password and authenticator code")
    p.add_argument("--user")
    add("logout", cmd_logout, "end the session")
    add("whoami", cmd_whoami, "show the logged-in user")
    p = add("import", cmd_import, "import files, folders and DICOMDIRs into the vault")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("import-media", cmd_import_media,
            "import an outside CD, USB stick, CD image or zip, reconciling the patient")
    p.add_argument("path", metavar="PATH", help="a folder or mounted media, a DICOMDIR, an .iso or a .zip")
    p.add_argument("--preview", action="store_true", help="list the studies on it and stop")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--local-id", metavar="ID", help="the patient's ID here (the outside ID is kept "
                       "as another ID)")
    group.add_argument("--outside-issuer", metavar="NAME", help="keep the outside ID, qualified by "
                       "the institution that issued it")
    p = add("studies", cmd_studies, "list cached studies")
    p.add_argument("--patient", metavar="ID")
    add("verify", cmd_verify, "re-check every instance and study manifest")
    p = add("shred", cmd_shred, "destroy a study irrecoverably (crypto-shredding)")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--reason", required=True)

    key = sub.add_parser("key", help="key management").add_subparsers(dest="key_command",
                                                                       required=True)
    add("rotate", cmd_key_rotate, "new master key; re-wrap all data keys", key)

    user = sub.add_parser("user", help="account administration").add_subparsers(
        dest="user_command", required=True)
    p = add("add", cmd_user_add, "add a user", user)
    p.add_argument("name")
    p.add_argument("--role", required=True)
    p.add_argument("--full-name", default="", metavar="NAME",
                   help="the person's name (alerts when they open a patient of their own surname)")
    p = add("disable", cmd_user_disable, "disable a user and end their sessions", user)
    p.add_argument("name")
    add("list", cmd_user_list, "list users", user)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True)
    add("verify", cmd_audit_verify, "check the audit trail's hash chain", audit)
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--user", help="one user's events")
    filters.add_argument("--patient", metavar="ID", help="events about one patient (by Patient ID)")
    filters.add_argument("--since", metavar="DATE", help="from this local date or date-time")
    filters.add_argument("--until", metavar="DATE", help="up to this local date (inclusive) or date-time")
    p = add("show", cmd_audit_show, "list audit records, newest first", audit, parents=[filters])
    p.add_argument("--type", choices=[t.value for t in EventType], help="one kind of event")
    p.add_argument("--xml", action="store_true",
                   help="print their DICOM PS3.15 audit messages instead, one XML document per line")
    p.add_argument("--limit", type=int, default=100)
    p = add("report", cmd_audit_report, "patient access or user activity report", audit, parents=[filters])
    p.add_argument("--out", type=Path, metavar="FILE", help="write it as CSV or PDF (by extension)")
    repository = audit.add_parser("repository", help="the central audit repository").add_subparsers(
        dest="repository_command", required=True)
    p = add("set", cmd_audit_repository_set,
            "where the trail goes: syslog over mutual TLS (admin)", repository)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=6514)
    p.add_argument("--ca", type=Path, required=True, help="PEM file of the CA(s) the repository's "
                   "certificate must chain to")
    p.add_argument("--cert", type=Path, required=True, help="this workstation's PEM certificate")
    p.add_argument("--key", type=Path, required=True, help="this workstation's PEM private key")
    p.add_argument("--server-name", help="the name in the repository's certificate, if not HOST")
    add("show", cmd_audit_repository_show, "the repository and how much is queued", repository)
    add("resume", cmd_audit_repository_resume, "send again after an untrusted certificate stopped the "
        "sync (once the repository was checked)", repository)
    p = add("sync", cmd_audit_sync, "send queued events to the central repository", audit)
    p.add_argument("--watch", action="store_true", help="keep sending as events arrive")
    p = add("reconcile", cmd_audit_reconcile,
            "compare what the repository received with the local trail", audit)
    p.add_argument("--central", type=Path, required=True,
                   help="the repository's messages, one RFC 5424 message per line")

    node = sub.add_parser("node", help="PACS nodes").add_subparsers(dest="node_command", required=True)
    p = add("add", cmd_node_add, "add or change a PACS node (admin)", node)
    p.add_argument("name")
    p.add_argument("--aet", required=True, help="the node's AE title")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-ca", type=Path, help="PEM CA file the node's certificate must chain to")
    p.add_argument("--tls-cert", type=Path, help="this workstation's PEM certificate")
    p.add_argument("--tls-key", type=Path, help="this workstation's PEM private key")
    p.add_argument("--server-name", help="the name in the node's certificate, if not HOST")
    add("list", cmd_node_list, "list the PACS nodes", node)
    p = add("remove", cmd_node_remove, "remove a PACS node (admin)", node)
    p.add_argument("name")
    p = add("echo", cmd_node_echo, "C-ECHO a PACS node", node)
    p.add_argument("name")

    p = add("query", cmd_query, "find studies at a PACS node (C-FIND)")
    p.add_argument("node")
    p.add_argument("--patient", metavar="ID", help="Patient ID (wildcards * and ? allowed)")
    p.add_argument("--name", help="patient name, DICOM style: FAMILY^GIVEN, wildcards allowed")
    p.add_argument("--date", help="study date YYYYMMDD or range YYYYMMDD-YYYYMMDD")
    p.add_argument("--modality")
    p.add_argument("--accession")
    p = add("retrieve", cmd_retrieve, "bring a study from a PACS node into the vault (C-GET)")
    p.add_argument("node")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--move", action="store_true",
                   help="C-MOVE to this workstation's storage SCP instead (the PACS must know it)")
    p = add("send", cmd_send, "send a cached study to a PACS node (queued while it is down)")
    p.add_argument("node")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p = add("outbox", cmd_outbox, "sends waiting for a PACS node that was down")
    p.add_argument("--flush", action="store_true", help="try them now")
    p = add("cache", cmd_cache, "the local cache: usage, pinning, eviction to the site's budget")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--pin", metavar="STUDY_UID", help="keep this study whatever the budget")
    group.add_argument("--unpin", metavar="STUDY_UID")
    p.add_argument("--evict", action="store_true",
                   help="drop least recently used studies the PACS holds until the budget is met")
    p = add("scp-tls", cmd_scp_tls, "TLS for the storage SCP: its certificate and the senders' CA (admin)")
    p.add_argument("--tls-ca", type=Path, help="PEM CA file senders' certificates must chain to")
    p.add_argument("--tls-cert", type=Path, help="the SCP's PEM certificate")
    p.add_argument("--tls-key", type=Path, help="the SCP's PEM private key")
    p.add_argument("--off", action="store_true", help="plain connections again")
    p = add("scp", cmd_scp, "run the storage SCP in the foreground (receives from the PACS nodes)")
    p.add_argument("--port", type=int, help="instead of the site policy's scp_port")
    p.add_argument("--host", default="", help="the address to listen on (default: all)")

    p = add("export", cmd_export, "encrypted media (USB zip or CD image) with its disclosure record")
    p.add_argument("study_uids", nargs="+", metavar="STUDY_UID")
    p.add_argument("--recipient", required=True, help="who receives it (person or organisation)")
    p.add_argument("--recipient-type", required=True, choices=[k.value for k in RecipientKind])
    p.add_argument("--purpose", required=True, choices=[k.value for k in Purpose])
    p.add_argument("--authorization", default="", metavar="REF",
                   help="reference of the signed authorization or legal order")
    p.add_argument("--identity-check", required=True, choices=[k.value for k in IdentityCheck],
                   help="how the requester was identified")
    p.add_argument("--passphrase-delivery", default=Delivery.HANDED_OVER.value,
                   choices=[k.value for k in Delivery])
    p.add_argument("--media", choices=[k.value for k in MediaKind], default=MediaKind.ZIP.value)
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--label", default="", help="text for the media label")
    p.add_argument("--burn", nargs="?", const="", metavar="DEVICE",
                   help="burn the CD image with xorriso (default: the first writer found)")
    p.add_argument("--cover-letter", type=Path, metavar="PDF",
                   help="also write the passphrase letter (print it, send it apart, delete the file)")
    p.add_argument("--deidentify", action="store_true",
                   help="PS3.15 Annex E basic profile (required by the site for research and teaching)")
    p.add_argument("--retain-dates", action="store_true", help="shift dates per patient instead of removing")
    p.add_argument("--clean-descriptors", action="store_true", help="keep descriptions that name nobody")
    p = add("disclosures", cmd_disclosures, "a patient's accounting of disclosures (HIPAA 164.528)")
    p.add_argument("--patient", required=True, metavar="ID")
    p.add_argument("--pdf", type=Path, metavar="FILE", help="also write it as a PDF to give the patient")
    agreement = sub.add_parser("agreement", help="business associate agreements").add_subparsers(
        dest="agreement_command", required=True)
    p = add("add", cmd_agreement_add, "register or renew an agreement (privacy officer)", agreement)
    p.add_argument("recipient", metavar="NAME")
    p.add_argument("--reference", required=True)
    p.add_argument("--effective", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--expires", required=True, metavar="YYYY-MM-DD", help="last day in force")
    p = add("revoke", cmd_agreement_revoke, "revoke an agreement", agreement)
    p.add_argument("recipient", metavar="NAME")
    p.add_argument("--reason", required=True)
    add("list", cmd_agreement_list, "list agreements and whether they are in force", agreement)

    add("enrol", cmd_enrol, "set up a new authenticator entry and recovery codes")
    add("passwd", cmd_passwd, "change your password")
    policy = sub.add_parser("policy", help="the site's security policy").add_subparsers(
        dest="policy_command", required=True)
    add("show", cmd_policy_show, "show the site policy", policy)
    p = add("set", cmd_policy_set, "change one site policy setting (admin)", policy)
    p.add_argument("name")
    p.add_argument("value")
    p = add("sign", cmd_policy_sign, "sign managed site policy settings with the site's Ed25519 key "
            "(IT's tool; no vault needed)", policy)
    p.add_argument("settings", metavar="SETTINGS.json")
    p.add_argument("--key", required=True, metavar="SITE_KEY.pem")
    p.add_argument("--out", required=True, metavar="FILE")
    patient = sub.add_parser("patient", help="patient records").add_subparsers(
        dest="patient_command", required=True)
    p = add("restrict", cmd_restrict, "restrict a patient (VIP): images only through break-glass", patient)
    p.add_argument("patient_id", metavar="PATIENT_ID")
    p.add_argument("--issuer", default="", help="Issuer of Patient ID, when the ID needs one")
    p.add_argument("--lift", action="store_true", help="lift the restriction")
    p = add("reconcile", cmd_reconcile, "declare two patient records one person: file the first study's "
            "patient's studies under the second's (import roles; audited)", patient)
    p.add_argument("study_uid", metavar="STUDY_UID", help="a study of the record that goes")
    p.add_argument("--into", required=True, metavar="STUDY_UID", help="a study of the record that stays")
    p = add("break-glass", cmd_break_glass, "emergency access to a restricted study (audited, alerted)")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--reason", required=True)

    p = add("gui", cmd_gui, "open the workstation")
    p.add_argument("--open", metavar="STUDY_UID")
    p.add_argument("--layout", choices=list(LAYOUTS), default="1x1")
    p.add_argument("--screenshot", metavar="FILE", help="render offscreen to a PNG and exit")
    p.add_argument("--emergency", action="store_true",
                   help="emergency mode when the PACS and the audit repository are both down: the cache "
                        "opens read-only for reading")
    p = add("backup", cmd_backup, "write the whole vault to one encrypted file (passphrase: "
            "CUSTODIAN_BACKUP_PASSPHRASE or the prompt)")
    p.add_argument("out", metavar="FILE")
    p = add("restore", cmd_restore, "restore a backup into an empty --home")
    p.add_argument("backup", metavar="FILE")
    p.add_argument("--key-storage", choices=["auto", "keyring", "passphrase"], default="auto",
                   help="where the restored master key lives (auto: the OS keyring when one is usable)")
    p = add("selftest", cmd_selftest, "check crypto, decoders, Qt, VTK, the vault, the clock, the PACS "
            "and the audit repository (exit 1 when a check fails, 4 when the index is damaged)")
    p.add_argument("--offline", action="store_true", help="skip the PACS and audit repository checks")
    p = add("compliance-report", cmd_compliance_report, "map HIPAA 164.312 and the imaging checklist to "
            "features and tests, with the tests' last results")
    p.add_argument("--results", metavar="JUNIT.xml", help="pytest's JUnit XML (default: test-results.xml "
                   "in this folder, when there is one)")
    p.add_argument("--out", required=True, metavar="FILE.md|FILE.pdf")
    p = add("demo", cmd_demo, "make a throw-away demo home and open the workstation")
    p.add_argument("--no-gui", action="store_true", help="create the demo home and stop")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # everything Custodian writes is for this OS user only
    process.harden()  # a core dump would put decrypted images and keys in a plaintext file
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json)
    try:
        return args.func(args, out)
    except NotAuthenticated as exc:
        print(f"custodian: {exc} Run 'custodian login' to start a session.", file=sys.stderr)
        return exc.exit_code
    except CustodianError as exc:
        print(f"custodian: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("custodian: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:
        # Unexpected: the message may quote data (PHI), so only the type and the code path show.
        print(f"custodian: unexpected {type(exc).__name__}; run with --debug for where it happened.",
              file=sys.stderr)
        if args.debug:
            print("".join(traceback.format_tb(exc.__traceback__)), file=sys.stderr)
        return EXIT_FAILED
