"""The command line: Custodian's scripting and operations surface (see CONTRACT.md).

Commands parse arguments, gather credentials (environment or prompt), call the vault and print
its answer; they hold no logic of their own. Errors become one plain sentence on stderr and
the contract's exit code.

One module per group of commands, as calibre's `db/cli/cmd_*.py`: each declares its commands'
options (its `PARSERS`) next to the functions that run them, so a command is read and changed in
one place. This module only assembles the parser and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

from app import __version__
from app.cli import account, admin, audit, media, nodes, studies, workstation
from app.cli.output import EXIT_FAILED, Output
from app.cli.parsing import Commands
from app.errors import CustodianError, NotAuthenticated
from app.security import process

MODULES = (account, studies, audit, nodes, media, admin, workstation)

# The order of `custodian --help` and of argparse's "choose from" list, kept as it always was.
COMMANDS = ("init", "login", "logout", "whoami", "import", "import-media", "studies", "verify", "shred",
            "key", "user", "audit", "node", "query", "retrieve", "send", "outbox", "cache", "scp-tls",
            "scp", "export", "disclosures", "agreement", "enrol", "passwd", "policy", "patient",
            "break-glass", "gui", "backup", "restore", "selftest", "compliance-report", "demo", "service")


def _globals_parser(defaults: bool) -> argparse.ArgumentParser:
    # Global options work before or after the command; only the top level sets defaults,
    # so a subcommand does not reset what was given before it.
    p = argparse.ArgumentParser(add_help=False)
    kw: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument("--home", help="data directory (default: $CUSTODIAN_HOME or the user data dir)",
                   **kw)
    p.add_argument("--socket", metavar="PATH",
                   help="talk to the workstation service at PATH (default: $CUSTODIAN_SOCKET; none: "
                        "open the home in this process)", **kw)
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout", **kw)
    p.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors", **kw)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="custodian", parents=[_globals_parser(defaults=True)],
                                     description="Custodian diagnostic DICOM workstation.")
    parser.add_argument("--version", action="version", version=f"custodian {__version__}")
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
                        _globals_parser(defaults=False))
    declared = {name: add for module in MODULES for name, add in module.PARSERS.items()}
    for name in COMMANDS:
        declared[name](commands)
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

