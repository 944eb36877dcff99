"""The site directory (`directory set`): where directory accounts are checked, which groups give
which roles, and the second factor of directory users. The service account's secret comes from
CUSTODIAN_DIRECTORY_SECRET and the MFA server's shared secret from CUSTODIAN_RADIUS_SECRET (or
prompts); both are kept in the vault, and so are the site CA read from --tls-ca and the card CA
read from --card-ca (the CRL is read where --crl says, at each card login)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from app.cli.credentials import current_session, open_vault, secret
from app.cli.output import EXIT_FAILED, EXIT_OK, Output
from app.cli.parsing import Command
from app.errors import UsageError
from app.security.directory import DEFAULT_FILTER, DirectoryConfig, mapping_text, parse_mapping


def _ca(path: str | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise UsageError(f"The CA file {path} cannot be read (a PEM file is expected).") from None


def cmd_directory_set(args: argparse.Namespace, out: Output) -> int:
    crl = args.crl or ""
    if crl and not crl.startswith(("http://", "https://")):
        crl = str(Path(crl).resolve())  # (read again at each card login, wherever it runs from)
    config = DirectoryConfig(args.url, args.base, args.bind_dn, parse_mapping(args.role), args.user_filter,
                             _ca(args.tls_ca), args.second_factor, args.radius or "", _ca(args.card_ca), crl)
    password = secret("CUSTODIAN_DIRECTORY_SECRET", "Directory service account secret: ")
    if not password:
        raise UsageError("Give the service account's secret (CUSTODIAN_DIRECTORY_SECRET or the prompt).")
    shared = secret("CUSTODIAN_RADIUS_SECRET", "MFA server shared secret: ") if config.radius else ""
    with open_vault(args) as vault:
        check = vault.admin.set_directory(current_session(vault), config, password, shared or "")
    answer = f"answers ({check.ms:.0f} ms)" if check.answers else f"does not answer now: {check.detail}"
    out.emit({"url": check.url, "base": config.base, "roles": mapping_text(config.roles),
              "second_factor": config.second_factor, "radius": config.radius or None,
              "crl": config.crl or None, "answers": check.answers, "ms": check.ms, "detail": check.detail},
             f"Directory set; the one in use ({check.url}) {answer}")
    return EXIT_OK if check.answers else EXIT_FAILED


def _directory_parser(command: Command) -> None:
    p = command.group("directory_command").add(
        "set", cmd_directory_set, "set the site directory and which of its groups give which role")
    p.add_argument("--url", required=True, help="ldaps://HOST[:PORT], or ldap://HOST[:PORT] with StartTLS")
    p.add_argument("--base", required=True, metavar="DN", help="where users and groups are searched")
    p.add_argument("--bind-dn", required=True, metavar="DN", help="Custodian's service account")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="the site CA (PEM) the directory's certificate must chain to")
    p.add_argument("--user-filter", default=DEFAULT_FILTER, metavar="FILTER",
                   help="finds the user; {user} is the name typed (AD: (sAMAccountName={user}))")
    p.add_argument("--role", action="append", required=True, metavar="ROLE=GROUP_DN",
                   help="members of GROUP_DN get ROLE; repeat it; the first group a user is in decides")
    p.add_argument("--second-factor", required=True, choices=["card", "radius", "totp"])
    p.add_argument("--card-ca", metavar="FILE",
                   help="the site's card CA (PEM) that the certificates of --second-factor card chain to")
    p.add_argument("--crl", metavar="FILE|URL",
                   help="the card CA's revocation list (PEM or DER), read at each card login")
    p.add_argument("--radius", metavar="HOST:PORT",
                   help="the MFA server checking the one-time codes of --second-factor radius (port 1812)")


PARSERS: dict[str, Callable[[Command], object]] = {"directory": _directory_parser}
