"""Credentials and the vault: secrets come from the environment (scripts, tests) or a prompt when
a person is at the keyboard, never from an option, so they stay out of shell history and `ps`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from app.cli.output import Output
from app.errors import UsageError
from app.paths import resolve_home
from app.security.users import Session

if TYPE_CHECKING:
    from app.security.keys import PassphraseSource
    from app.security.sealing import Sealer, TokenSealer
    from app.vault import Vault


def interactive() -> bool:
    return sys.stdin.isatty()


def secret(env: str, prompt: str, *, confirm: bool = False) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    if not interactive():
        return None
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != value:
        raise UsageError("The two entries do not match.")
    return value or None


def plain(env: str, prompt: str) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    return input(prompt).strip() or None if interactive() else None


def code_or_pin(prompt: str) -> str | None:
    """The second factor typed for a login or step-up: the card's PIN (CUSTODIAN_CARD_PIN) where
    the site's is a card, else the authenticator's or MFA server's code (CUSTODIAN_TOTP); typed
    unseen, as a PIN serves again and again."""
    return os.environ.get("CUSTODIAN_CARD_PIN") or (secret("CUSTODIAN_TOTP", prompt) or "").strip() or None


def socket_from(option: str | None) -> Path | None:
    """The workstation service to talk to: ``--socket``, else ``CUSTODIAN_SOCKET``; None: embedded."""
    value = option or os.environ.get("CUSTODIAN_SOCKET")
    return Path(value) if value else None


def passphrase_source() -> str | None:
    return secret("CUSTODIAN_PASSPHRASE", "Vault passphrase: ")


def key_ahead(args: argparse.Namespace) -> PassphraseSource:
    """The passphrase source for opening the home here, its key already being derived in the
    background (:func:`app.security.keys.derive_ahead`) while the command imports what it needs."""
    if socket_from(getattr(args, "socket", None)) is not None:
        return passphrase_source  # (a client of the service: no key here)
    from app.security.keys import derive_ahead

    return derive_ahead(resolve_home(args.home), passphrase_source)


def open_vault(args: argparse.Namespace, source: PassphraseSource | None = None) -> Vault:
    """The vault in this process (embedded mode), or the workstation service's answering for it
    when a socket is given (service mode: no home, no passphrase, no key here). ``source``: from
    :func:`key_ahead`, called before importing what the command needs besides the vault."""
    socket_path = socket_from(getattr(args, "socket", None))
    if socket_path is not None:
        from app.service.client import RemoteVault  # (only clients need the HTTP client)

        return cast("Vault", RemoteVault(socket_path))
    source = source or key_ahead(args)
    from app.vault import Vault  # (embedded: the store, its keys and every service load here)

    vault = Vault.open(resolve_home(args.home), source)
    for notice in vault.notices:
        print(notice, file=sys.stderr)
    return vault


def current_session(vault: Vault) -> Session:
    return vault.accounts.resume(vault.accounts.load_token())


def key_protection(args: argparse.Namespace, out: Output) -> tuple[bool, str | None]:
    """Where a new (or restored) vault's master key goes, and the passphrase if it is wrapped."""
    from app.security.keys import PASSPHRASE_FALLBACK_NOTICE, keyring_usable  # (the keyring is slow to load)

    use_keyring = {"auto": None, "keyring": True, "passphrase": False}[args.key_storage]
    if use_keyring is None:
        use_keyring = keyring_usable()
    if use_keyring:
        return True, None
    out.note(PASSPHRASE_FALLBACK_NOTICE)
    passphrase = secret("CUSTODIAN_PASSPHRASE", "New vault passphrase: ", confirm=True)
    if not passphrase:
        raise UsageError("Set CUSTODIAN_PASSPHRASE or run this interactively to choose one.")
    return False, passphrase



def service_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--service`` with its token (``--pkcs11 MODULE --slot N|--token LABEL``), for ``init``
    and ``restore``."""
    p.add_argument("--service", action="store_true",
                   help=f"{what} for the workstation service, run as its OS account: the master key sealed "
                        "in a PKCS#11 token (--pkcs11) or else in a key file only this account reads")
    p.add_argument("--pkcs11", metavar="MODULE", help="with --service: the token's PKCS#11 module (.so)")
    p.add_argument("--slot", type=int, metavar="N", help="the token's slot number")
    p.add_argument("--token", metavar="LABEL", help="the token's label (instead of --slot)")


def service_sealer(args: argparse.Namespace) -> Sealer:
    """The sealer ``--service`` asks for: the token named, else a key file."""
    from app.security.sealing import KeyFileSealer

    return sealer_named(args) or KeyFileSealer()


def sealer_named(args: argparse.Namespace) -> TokenSealer | None:
    """The PKCS#11 token the options name (``--pkcs11 MODULE`` with ``--slot`` or ``--token``), its
    PIN from CUSTODIAN_PKCS11_PIN or the prompt; None when no module is named."""
    if not args.pkcs11:
        return None
    from app.security.sealing import PIN_ENV, TokenSealer

    if args.slot is None and args.token is None:
        raise UsageError("Name the token: --slot N or --token LABEL.")
    pin = secret(PIN_ENV, "Token PIN: ")
    if not pin:
        raise UsageError(f"The token's PIN is needed: set {PIN_ENV} or run this interactively.")
    return TokenSealer(args.pkcs11, slot=args.slot, token=args.token, pin=pin)
