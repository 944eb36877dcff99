"""Accounts: the vault's first administrator, logging in and out, one's own password and
authenticator, and account administration (`user`)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import app.vault  # (its Vault, which loads the store and every service, only when a command uses it)
from app.cli.credentials import (
    code_or_pin,
    current_session,
    interactive,
    key_protection,
    open_vault,
    passphrase_source,
    plain,
    secret,
    service_options,
    service_sealer,
    socket_from,
)
from app.cli.output import EXIT_OK, Output, table
from app.cli.parsing import Command
from app.errors import CustodianError, NamesClash, NotAuthenticated, UsageError
from app.paths import resolve_home
from app.security.roles import parse_role
from app.security.users import check_name


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    home = resolve_home(args.home)
    if app.vault.Vault.exists(home):
        raise CustodianError(f"A vault already exists in {home}; it was left untouched.")
    password = secret("CUSTODIAN_PASSWORD", f"Password for {args.admin}: ", confirm=True)
    if not password:
        raise UsageError("The administrator needs a password (CUSTODIAN_PASSWORD or the prompt).")
    if args.service:  # nobody's passphrase or keyring: a token, or a file only this account reads
        vault, enrolment = app.vault.Vault.create(home, admin=args.admin, password=password, passphrase=None,
                                                  use_keyring=False, sealer=service_sealer(args))
    else:
        use_keyring, passphrase = key_protection(args, out)
        vault, enrolment = app.vault.Vault.create(home, admin=args.admin, password=password,
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
    user = args.user or plain("CUSTODIAN_USER", "User: ")
    password = secret("CUSTODIAN_PASSWORD", "Password: ")
    code = code_or_pin("Authenticator code (or card PIN): ")
    if not (user and password and code):
        raise UsageError("Login needs a user, a password and a code or card PIN (CUSTODIAN_USER, "
                         "CUSTODIAN_PASSWORD, CUSTODIAN_TOTP or CUSTODIAN_CARD_PIN, or the prompts).")
    with open_vault(args) as vault:
        token, session = vault.accounts.login(user, password, code)
        previous = vault.accounts.load_token()
        if previous:  # one person at a time on this workstation: the login ends the last session
            with contextlib.suppress(NotAuthenticated):
                vault.accounts.logout(vault.accounts.resume(previous))
        vault.accounts.save_token(token)
    expires = datetime.fromtimestamp(session.expires_at, UTC).isoformat(timespec="seconds")
    offline = " offline (the directory cannot be reached; it is asked again when it answers)"
    out.emit({"user": session.user.name, "role": session.user.role.value, "expires_at": expires,
              "source": "directory" if session.user.directory else "local", "offline": session.offline},
             f"Logged in{offline if session.offline else ''} as {session.user.name} "
             f"({session.user.role.value}); the session ends at the latest at {expires}.")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        with contextlib.suppress(NotAuthenticated):  # already over; the token goes either way
            vault.accounts.logout(current_session(vault))
        vault.accounts.clear_token()
    out.emit({"logged_out": True}, "Logged out.")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = vault.accounts.whoami(current_session(vault))
    user = session.user
    served = socket_from(args.socket)
    mode = f"through the workstation service at {served}" if served else f"embedded, vault in {vault.home}"
    out.emit({"user": user.name, "role": user.role.value, "needs_enrolment": session.needs_enrolment,
              "mode": "service" if served else "embedded"},
             f"{user.name} ({user.role.value}); {mode}"
             + (" — set up the authenticator again: custodian enrol" if session.needs_enrolment else ""))
    return EXIT_OK


def cmd_enrol(args: argparse.Namespace, out: Output) -> int:
    """Set up a new authenticator entry (after a recovery-code login, or a lost phone)."""
    if not interactive():
        raise UsageError("Setting up an authenticator needs a person at the keyboard: run it in a terminal.")
    with open_vault(args) as vault:
        session = current_session(vault)
        enrolment = vault.accounts.begin_reenrolment(session)
        print(f"Add this entry to your authenticator app:\n  {enrolment.totp_uri}")
        code = input("Code shown by the app for the new entry: ").strip()
        vault.accounts.finish_reenrolment(session, enrolment, code)
    out.emit({"user": enrolment.user.name, "recovery_codes": enrolment.recovery_codes},
             "Authenticator set up. New recovery codes (each works once; the old ones no longer do):\n  "
             + "\n  ".join(enrolment.recovery_codes))
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace, out: Output) -> int:
    old = secret("CUSTODIAN_PASSWORD", "Current password: ")
    new = secret("CUSTODIAN_NEW_PASSWORD", "New password: ", confirm=True)
    if not (old and new):
        raise UsageError("Give the current and the new password (CUSTODIAN_PASSWORD and "
                         "CUSTODIAN_NEW_PASSWORD, or the prompts).")
    with open_vault(args) as vault:
        vault.accounts.change_password(current_session(vault), old, new)
    out.emit({"password_changed": True}, "Password changed.")
    return EXIT_OK


def cmd_user_add(args: argparse.Namespace, out: Output) -> int:
    try:
        role = parse_role(args.role)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    password = secret("CUSTODIAN_PASSWORD", f"Password for {args.name}: ", confirm=True)
    if not password:
        raise UsageError("The new account needs a password (CUSTODIAN_PASSWORD or the prompt).")
    with open_vault(args) as vault:
        enrolment = vault.admin.add_user(current_session(vault), args.name, role, password, args.full_name)
    out.emit({"user": args.name, "role": role.value, "totp_uri": enrolment.totp_uri,
              "recovery_codes": enrolment.recovery_codes},
             lambda: f"User {args.name} ({role.value}) added.\nAuthenticator:\n  {enrolment.totp_uri}\n"
             "Recovery codes:\n  " + "\n  ".join(enrolment.recovery_codes))
    return EXIT_OK


def cmd_user_disable(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.admin.disable_user(current_session(vault), args.name)
    out.emit({"user": args.name, "disabled": True},
             f"User {args.name} disabled; their sessions have ended.")
    return EXIT_OK


def cmd_user_rename(args: argparse.Namespace, out: Output) -> int:
    """An administrator's renames; or those that let a vault refused its upgrade (names differing
    only in case) go on, made by whoever can open it (its passphrase or keyring; the service's
    account): the upgrade makes them and records them in the trail."""
    renames = dict([(args.name, args.new_name), *args.also])
    for new_name in renames.values():
        check_name(new_name)
    try:
        vault = open_vault(args)
    except NamesClash:
        app.vault.Vault.open(resolve_home(args.home), passphrase_source, renames).close()
        done = renames
    else:
        with vault:
            session = current_session(vault)
            done = {old: vault.admin.rename_user(session, old, new).name for old, new in renames.items()}
    out.emit([{"user": new, "renamed_from": old} for old, new in done.items()],
             "\n".join(f"User {old} is now {new}." for old, new in done.items()))
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        users = vault.admin.list_users(current_session(vault))
    out.emit([{"user": u.name, "role": u.role.value, "disabled": u.disabled} for u in users],
             lambda: table([[u.name, u.role.value, "disabled" if u.disabled else "active"]
                             for u in users], ["User", "Role", "State"]))
    return EXIT_OK



# ---------------------------------------------------------------------------- parsers
def _init_parser(command: Command) -> None:
    p = command.runs(cmd_init)
    p.add_argument("--admin", required=True, metavar="NAME")
    p.add_argument("--key-storage", choices=["auto", "keyring", "passphrase"], default="auto",
                   help="where the master key lives (auto: the OS keyring when one is usable)")
    service_options(p, "a vault")


def _login_parser(command: Command) -> None:
    p = command.runs(cmd_login)
    p.add_argument("--user")


def _user_parser(command: Command) -> None:
    user = command.group("user_command")
    p = user.add("add", cmd_user_add, "add a user")
    p.add_argument("name")
    p.add_argument("--role", required=True)
    p.add_argument("--full-name", default="", metavar="NAME",
                   help="the person's name (alerts when they open a patient of their own surname)")
    p = user.add("disable", cmd_user_disable, "disable a user and end their sessions")
    p.add_argument("name")
    p = user.add("rename", cmd_user_rename, "give a user another name (the same whatever its case)")
    p.add_argument("name")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("NAME", "NEW_NAME"),
                   help="another rename made with it (a refused upgrade needs every clash renamed at once)")
    user.add("list", cmd_user_list, "list users")


PARSERS: dict[str, Callable[[Command], object]] = {
    "init": _init_parser,
    "login": _login_parser,
    "logout": lambda command: command.runs(cmd_logout),
    "whoami": lambda command: command.runs(cmd_whoami),
    "user": _user_parser,
    "enrol": lambda command: command.runs(cmd_enrol),
    "passwd": lambda command: command.runs(cmd_passwd),
}
