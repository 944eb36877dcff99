"""Hanging protocols: list them, add or remove a reader's own or (administrator) the site's, and
carry the site's between stations as a file IT signs (``policy sign``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from app.cli.credentials import current_session, open_vault
from app.cli.output import EXIT_OK, Output
from app.cli.parsing import Command
from app.errors import UsageError


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path} could not be read: {exc.strerror}.") from None


def cmd_protocol_list(args: argparse.Namespace, out: Output) -> int:
    from app.imaging.protocols import to_dict

    with open_vault(args) as vault:
        found = vault.protocols.protocols(current_session(vault))
    out.emit([{**to_dict(p), "managed": p.managed} for p in found], lambda: "\n".join(
        f"{p.name}  ({'site policy' if p.managed else p.scope.value})  {p.layout}" for p in found)
        or "No hanging protocols: studies hang the built-in way.")
    return EXIT_OK


def cmd_protocol_add(args: argparse.Namespace, out: Output) -> int:
    from app.imaging.protocols import Scope, from_dict

    try:
        given = from_dict(json.loads(_read(args.file)))
    except ValueError:
        raise UsageError(f"{args.file} is not JSON: a hanging protocol is one JSON object.") from None
    protocol = replace(given, scope=Scope.SITE if args.site else Scope.USER)
    with open_vault(args) as vault:
        keep = vault.protocols.save_site if args.site else vault.protocols.save
        keep(current_session(vault), protocol)
    out.emit({"name": protocol.name, "scope": protocol.scope.value},
             f"Hanging protocol '{protocol.name}' saved ({protocol.scope.value}).")
    return EXIT_OK


def cmd_protocol_remove(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = current_session(vault)
        (vault.protocols.remove_site if args.site else vault.protocols.remove)(session, args.name)
    out.emit({"removed": args.name}, f"Hanging protocol '{args.name}' removed.")
    return EXIT_OK


def cmd_protocol_export(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        settings = vault.protocols.export_site(current_session(vault))
    args.out.write_text(settings)
    out.emit({"out": str(args.out)}, f"The site's hanging protocols are in {args.out}; IT signs them with "
             "'custodian policy sign' (alone, or among the site policy's settings).")
    return EXIT_OK


def cmd_protocol_import(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        read = vault.protocols.import_signed(current_session(vault), _read(args.file))
    out.emit({"imported": [p.name for p in read]},
             f"The site's hanging protocols on this station are now the {len(read)} of the signed file.")
    return EXIT_OK


def _protocol_parser(command: Command) -> None:
    group = command.group("protocol_command")
    group.add("list", cmd_protocol_list, "the site's hanging protocols and your own")
    p = group.add("add", cmd_protocol_add, "add or replace a hanging protocol from a JSON file (your own; "
                  "with --site the site's, administrator)")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--site", action="store_true")
    p = group.add("remove", cmd_protocol_remove, "remove one of your hanging protocols (--site: the site's)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--site", action="store_true")
    p = group.add("export", cmd_protocol_export, "write the site's hanging protocols out for IT to sign")
    p.add_argument("out", type=Path, metavar="OUT")
    p = group.add("import", cmd_protocol_import, "replace the site's hanging protocols with those of a file "
                  "signed with the site's key")
    p.add_argument("file", type=Path, metavar="FILE")


PARSERS: dict[str, Callable[[Command], object]] = {"protocol": _protocol_parser}
