"""Running the workstation: site policy, restricted patients and break-glass, the master key,
backup and restore, and the checks an auditor or site IT asks for (selftest, compliance report)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from app.cli.credentials import (
    code_or_pin,
    current_session,
    key_protection,
    open_vault,
    passphrase_source,
    sealer_named,
    secret,
    service_options,
    service_sealer,
)
from app.cli.output import EXIT_FAILED, EXIT_OK, Output
from app.cli.parsing import Command
from app.errors import CustodianError, UsageError
from app.paths import resolve_home
from app.security.policy import SitePolicy
from app.vault import Vault


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
        policy = asdict(vault.admin.set_policy(current_session(vault), args.name, args.value))
    out.emit(policy, f"Site policy: {args.name} is now {policy[args.name]}.")
    return EXIT_OK


def cmd_restrict(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.admin.restrict_patient(current_session(vault), args.patient_id, not args.lift, args.issuer)
    state = "lifted" if args.lift else "in force"
    out.emit({"patient_id": args.patient_id, "restricted": not args.lift},
             f"Restriction {state} for that patient.")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        moved = vault.intake.reconcile_patients(current_session(vault), args.study_uid, args.into)
    out.emit({"study_uid": args.study_uid, "into": args.into, "studies_moved": moved},
             f"{moved} stud{'y' if moved == 1 else 'ies'} now filed under the patient of study "
             f"{args.into}.")
    return EXIT_OK


def cmd_break_glass(args: argparse.Namespace, out: Output) -> int:
    code = code_or_pin("Authenticator code (or card PIN): ")
    if not code:
        raise UsageError("Break-glass needs your authenticator code or card PIN (CUSTODIAN_TOTP, "
                         "CUSTODIAN_CARD_PIN or the prompt).")
    with open_vault(args) as vault:
        until = vault.reading.break_glass(current_session(vault), args.study_uid, args.reason, code)
    expires = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
    out.emit({"study_uid": args.study_uid, "expires_at": expires},
             f"Emergency access granted until {expires}. It is recorded and the privacy officer is alerted.")
    return EXIT_OK


def cmd_key_rotate(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        count = vault.admin.rotate_keys(current_session(vault), passphrase_source())
    out.emit({"rewrapped": count}, f"New index and master keys in place; {count} data key(s) re-wrapped.")
    return EXIT_OK


def cmd_key_passphrase(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = current_session(vault)
        vault.admin.change_passphrase(session, secret("CUSTODIAN_NEW_PASSPHRASE", "New vault passphrase: ",
                                                      confirm=True) or "")
    out.emit({"passphrase": "changed"}, "The vault passphrase is changed; the old one no longer opens it.")
    return EXIT_OK


def cmd_key_move(args: argparse.Namespace, out: Output) -> int:
    from app.security.sealing import KEK_FILE, PIN_FILE

    sealer = sealer_named(args)
    home = resolve_home(args.home)
    with open_vault(args) as vault:
        moved = vault.admin.move_master_key(current_session(vault), sealer)
    where = (f"sealed in the PKCS#11 token; its PIN is kept in {home / PIN_FILE}" if moved.target == "pkcs11"
             else f"sealed with the key file {home / KEK_FILE}")
    advice = ("" if moved.source == "pkcs11" else " Run 'custodian key rotate' next, so that an old copy of "
              "what held it before opens nothing.")
    out.emit({"key_storage": moved.target, "moved_from": moved.source,
              "checkpoint_key": moved.checkpoint_key},
             f"The master key is now {where}, readable by this account only; audit checkpoints are "
             f"signed by a new key ({moved.checkpoint_key}).{advice}")
    return EXIT_OK


def _backup_passphrase(confirm: bool) -> str:
    from app.store.backup import check_passphrase

    return check_passphrase(secret("CUSTODIAN_BACKUP_PASSPHRASE", "Backup passphrase: ", confirm=confirm))


def cmd_backup(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.admin.backup(current_session(vault), Path(args.out).resolve(),
                                    _backup_passphrase(True))
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
    sealer = service_sealer(args) if args.service else None
    use_keyring, vault_passphrase = (False, None) if sealer else key_protection(args, out)
    with Vault.restore(source, home, passphrase, vault_passphrase=vault_passphrase,
                       use_keyring=use_keyring, sealer=sealer) as vault:
        mode = vault.key_mode
    out.emit({"home": str(home), "key_storage": mode},
             f"Vault restored into {home} (master key in the {mode}). Log in as before, then run "
             "'custodian verify' and 'custodian audit verify'.")
    return EXIT_OK


def cmd_selftest(args: argparse.Namespace, out: Output) -> int:
    from app import selftest
    from app.ui.health import qt_check

    home = resolve_home(args.home)
    checks = selftest.run(home, lambda: Vault.open(home, passphrase_source) if Vault.exists(home) else None,
                          network=not args.offline, qt=qt_check)
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



# ---------------------------------------------------------------------------- parsers
def _key_parser(command: Command) -> None:
    key = command.group("key_command")
    key.add("rotate", cmd_key_rotate, "new index and master keys; re-wrap all data keys (admin)")
    key.add("passphrase", cmd_key_passphrase, "change the vault passphrase (passphrase mode; admin)")
    p = key.add("move", cmd_key_move, "seal the master key in a PKCS#11 token (PIN: CUSTODIAN_PKCS11_PIN) "
                "or back with a key file only this account reads; run as the service account (admin)")
    place = p.add_mutually_exclusive_group(required=True)
    place.add_argument("--pkcs11", metavar="MODULE", help="the token's PKCS#11 module (a .so file)")
    place.add_argument("--key-file", action="store_true", help="a key file in the vault's folder (0400)")
    p.add_argument("--slot", type=int, metavar="N", help="the token's slot number")
    p.add_argument("--token", metavar="LABEL", help="the token's label (instead of --slot)")


def _policy_parser(command: Command) -> None:
    policy = command.group("policy_command")
    policy.add("show", cmd_policy_show, "show the site policy")
    p = policy.add("set", cmd_policy_set, "change one site policy setting (admin)")
    p.add_argument("name")
    p.add_argument("value")
    p = policy.add("sign", cmd_policy_sign, "sign managed site policy settings with the site's Ed25519 key "
                   "(IT's tool; no vault needed)")
    p.add_argument("settings", metavar="SETTINGS.json")
    p.add_argument("--key", required=True, metavar="SITE_KEY.pem")
    p.add_argument("--out", required=True, metavar="FILE")


def _patient_parser(command: Command) -> None:
    patient = command.group("patient_command")
    p = patient.add("restrict", cmd_restrict, "restrict a patient (VIP): images only through break-glass")
    p.add_argument("patient_id", metavar="PATIENT_ID")
    p.add_argument("--issuer", default="", help="Issuer of Patient ID, when the ID needs one")
    p.add_argument("--lift", action="store_true", help="lift the restriction")
    p = patient.add("reconcile", cmd_reconcile, "declare two patient records one person: file the first "
                    "study's patient's studies under the second's (import roles; audited)")
    p.add_argument("study_uid", metavar="STUDY_UID", help="a study of the record that goes")
    p.add_argument("--into", required=True, metavar="STUDY_UID", help="a study of the record that stays")


def _break_glass_parser(command: Command) -> None:
    p = command.runs(cmd_break_glass)
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--reason", required=True)


def _backup_parser(command: Command) -> None:
    p = command.runs(cmd_backup)
    p.add_argument("out", metavar="FILE")


def _restore_parser(command: Command) -> None:
    p = command.runs(cmd_restore)
    p.add_argument("backup", metavar="FILE")
    p.add_argument("--key-storage", choices=["auto", "keyring", "passphrase"], default="auto",
                   help="where the restored master key lives (auto: the OS keyring when one is usable)")
    service_options(p, "the restored vault")


def _selftest_parser(command: Command) -> None:
    p = command.runs(cmd_selftest)
    p.add_argument("--offline", action="store_true", help="skip the PACS and audit repository checks")


def _compliance_report_parser(command: Command) -> None:
    p = command.runs(cmd_compliance_report)
    p.add_argument("--results", metavar="JUNIT.xml", help="pytest's JUnit XML (default: test-results.xml "
                   "in this folder, when there is one)")
    p.add_argument("--out", required=True, metavar="FILE.md|FILE.pdf")


PARSERS: dict[str, Callable[[Command], object]] = {
    "key": _key_parser,
    "policy": _policy_parser,
    "patient": _patient_parser,
    "break-glass": _break_glass_parser,
    "backup": _backup_parser,
    "restore": _restore_parser,
    "selftest": _selftest_parser,
    "compliance-report": _compliance_report_parser,
}
