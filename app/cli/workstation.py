"""The workstation's window: `gui` and `demo`, the only commands that start Qt (imported inside
them, so every other command starts without it)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from app.cli.credentials import current_session, key_ahead, open_vault
from app.cli.output import EXIT_OK, Output
from app.cli.parsing import Command
from app.errors import CustodianError, NotAuthenticated, UsageError
from app.imaging.hanging import LAYOUTS
from app.paths import resolve_home
from app.security import totp
from app.security.sessions import Session


def cmd_gui(args: argparse.Namespace, out: Output) -> int:
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    elif not _has_display():
        raise CustodianError("No display is available here: run the workstation on a desktop, "
                             "or render it with --screenshot FILE.")
    source = key_ahead(args)  # (the vault's key is derived while Qt loads)
    from app.ui.application import run_gui

    vault = open_vault(args, source)
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


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from app.demo.home import make_demo_home

    demo = make_demo_home(Path(args.home) if args.home else None)
    out.emit(demo.as_dict(), demo.describe)
    if args.no_gui:
        return EXIT_OK
    from app.ui.application import run_gui
    from app.vault import Vault

    with Vault.open(demo.home, lambda: demo.passphrase) as vault:
        if _has_display():
            return run_gui(vault, None, demo_codes=demo.current_codes)
        # No screen (a server, a container): show what the radiologist would see, as a picture.
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        rad = next(u for u in demo.users if u.name == "rad")
        _, session = vault.accounts.login(rad.name, rad.password, totp.current_code(rad.totp_secret))
        shot = demo.home.parent / "custodian-demo.png"
        result = run_gui(vault, session, open_study=demo.featured, layout="1x2",
                         screenshot=shot)
        out.note(f"No display here: the workstation was rendered to {shot} instead.")
        return result


def cmd_service(args: argparse.Namespace, out: Output) -> int:
    """The workstation service in the foreground (what the systemd unit runs)."""
    from app.service.daemon import run

    if not args.socket:
        raise UsageError("Give the socket to listen on: custodian service --socket PATH.")
    return run(resolve_home(args.home), Path(args.socket), args.group)


def _has_display() -> bool:
    if sys.platform != "linux" or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))



# ---------------------------------------------------------------------------- parsers
def _gui_parser(command: Command) -> None:
    p = command.runs(cmd_gui)
    p.add_argument("--open", metavar="STUDY_UID")
    p.add_argument("--layout", choices=list(LAYOUTS), default="1x1")
    p.add_argument("--screenshot", metavar="FILE", help="render offscreen to a PNG and exit")
    p.add_argument("--emergency", action="store_true",
                   help="emergency mode when the PACS and the audit repository are both down: the cache "
                        "opens read-only for reading")


def _demo_parser(command: Command) -> None:
    p = command.runs(cmd_demo)
    p.add_argument("--no-gui", action="store_true", help="create the demo home and stop")


def _service_parser(command: Command) -> None:
    p = command.runs(cmd_service)
    p.add_argument("--group", help="the OS group whose members may connect (socket mode 0660)")


PARSERS: dict[str, Callable[[Command], object]] = {"gui": _gui_parser, "demo": _demo_parser,
                                                    "service": _service_parser}
