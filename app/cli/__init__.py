"""The command line: Custodian's scripting and operations surface (see CONTRACT.md).

Commands parse arguments, gather credentials (environment or prompt), call the vault and print
its answer; they hold no logic of their own. Errors become one plain sentence on stderr and
the contract's exit code.

One module per group of commands, as calibre's `db/cli/cmd_*.py`: each declares its commands'
options (its `PARSERS`) next to the functions that run them, so a command is read and changed in
one place. This module holds the table of commands (name, module, help), assembles the parser
and turns errors into exit codes. A command's module is imported only when that command runs
(app/cli/parsing.py), so `custodian --help` starts without any of them and a command without the
others' (and what they import: the vault, DICOM, networking, Qt).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

from app import __version__
from app.cli.output import EXIT_FAILED, Output
from app.cli.parsing import Command
from app.errors import CustodianError, NotAuthenticated
from app.security import process

# Each command: the module (app/cli/NAME.py) that declares its options and runs it, and its line
# in `custodian --help`, in the order of --help and of argparse's "choose from" list.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("account", "create a new vault and its first administrator"),
    "login": ("account", "log in with password and authenticator code"),
    "logout": ("account", "end the session"),
    "whoami": ("account", "show the logged-in user"),
    "import": ("studies", "import files, folders and DICOMDIRs into the vault"),
    "import-media": ("studies", "import an outside CD, USB stick, CD image or zip, reconciling the patient"),
    "studies": ("studies", "list cached studies"),
    "verify": ("studies", "re-check every instance and study manifest"),
    "shred": ("studies", "destroy a study irrecoverably (crypto-shredding)"),
    "report": ("reports", "a study's reports: structured reports as text, PDF reports by title"),
    "key-images": ("key_images", "your key images of a study, sent to the PACS as a Key Object Selection "
                                 "document"),
    "key": ("admin", "key management"),
    "user": ("account", "account administration"),
    "audit": ("audit", "the audit trail"),
    "node": ("nodes", "PACS nodes"),
    "query": ("nodes", "find studies at a PACS node (C-FIND)"),
    "retrieve": ("nodes", "bring a study from a PACS node into the vault (C-GET)"),
    "send": ("nodes", "send a cached study to a PACS node (queued while it is down)"),
    "outbox": ("nodes", "sends waiting for a PACS node that was down"),
    "cache": ("nodes", "the local cache: usage, pinning, eviction to the site's budget"),
    "scp-tls": ("nodes", "TLS for the storage SCP: its certificate and the senders' CA (admin)"),
    "scp": ("nodes", "run the storage SCP in the foreground (receives from the PACS nodes)"),
    "export": ("media", "encrypted media (USB zip or CD image) with its disclosure record"),
    "disclosures": ("media", "a patient's accounting of disclosures (HIPAA 164.528)"),
    "agreement": ("media", "business associate agreements"),
    "enrol": ("account", "set up a new authenticator entry and recovery codes"),
    "passwd": ("account", "change your password"),
    "policy": ("admin", "the site's security policy"),
    "protocol": ("hanging_protocols", "hanging protocols: yours and the site's, shared as a signed file"),
    "directory": ("directory", "the site directory (LDAP, Active Directory) for directory accounts"),
    "patient": ("admin", "patient records"),
    "break-glass": ("admin", "emergency access to a restricted study (audited, alerted)"),
    "gui": ("workstation", "open the workstation"),
    "backup": ("admin", "write the whole vault to one encrypted file (passphrase: "
                        "CUSTODIAN_BACKUP_PASSPHRASE or the prompt)"),
    "restore": ("admin", "restore a backup into an empty --home"),
    "selftest": ("admin", "check crypto, decoders, Qt, VTK, the vault, the clock, the PACS and the audit "
                          "repository (exit 1 when a check fails, 4 when the index is damaged)"),
    "compliance-report": ("admin", "map HIPAA 164.312 and the imaging checklist to features and tests, "
                                   "with the tests' last results"),
    "demo": ("workstation", "make a throw-away demo home and open the workstation"),
    "service": ("workstation", "run the workstation service in the foreground (--socket PATH): it alone "
                               "opens the vault; the GUI and CLI of the allowed group talk to it there"),
}


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Command)
    common = _globals_parser(defaults=False)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, module=module, command=name, summary=help_text, common=common)
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

