"""``custodian gui``: the Qt application around the main window, and the screenshot mode."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QApplication, QDialog

from app import trace
from app.errors import CustodianError, UsageError
from app.imaging.hanging import LAYOUTS
from app.security.sessions import Session
from app.ui.enrolment_dialog import required_reenrolment
from app.ui.first_paint import after_first_paint, mark_first_paint
from app.ui.login_dialog import LoginDialog
from app.ui.theme import apply_dark_theme
from app.vault import Vault

if TYPE_CHECKING:
    from app.net.scp import StorageScp
    from app.ui.main_window import MainWindow

SCREENSHOT_SIZE = (1280, 800)
# What the window after the login needs and the login dialog does not (the viewers, NumPy, pydicom,
# networking: most of the start): imported while the reader types, once the dialog is on screen.
AFTER_LOGIN = ("app.ui.main_window", "app.net.scp", "app.net.watch", "app.audit.repository",
               "app.ui.audit_sync_status")


def _application(*, offscreen: bool) -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    argv = [sys.argv[0] if sys.argv else "custodian"]
    if offscreen:  # a screenshot needs no display, and must not flash a window on one
        argv += ["-platform", "offscreen"]
    app = QApplication(argv)
    app.setApplicationName("Custodian")
    return app


def run_gui(vault: Vault, session: Session | None, *, open_study: str | None = None,
            layout: str = "1x1", screenshot: Path | None = None,
            demo_codes: Callable[[], dict[str, str]] | None = None) -> int:
    """Run the viewer and return the exit code: 0 done, 1 login cancelled or screenshot failed.

    Without ``session`` the reader logs in first, and that session is ended when the viewer
    closes; so is any session started in the viewer (switch user). ``demo_codes`` (throw-away
    demo homes only) feeds the login dialog's code hint.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"Unknown layout '{layout}'; choose one of: {', '.join(LAYOUTS)}.")
    # Offscreen only when nobody has to type a password into the login dialog.
    app = _application(offscreen=screenshot is not None and session is not None)
    apply_dark_theme(app)
    if not vault.embedded:  # a client of the workstation service: the service does the station's work
        return _run(app, vault, session, open_study, layout, screenshot, demo_codes)
    vault.trail.record_application(started=True)
    try:
        return _run(app, vault, session, open_study, layout, screenshot, demo_codes)
    finally:
        vault.trail.record_application(started=False)


def _run(app: QApplication, vault: Vault, session: Session | None, open_study: str | None, layout: str,
         screenshot: Path | None, demo_codes: Callable[[], dict[str, str]] | None) -> int:
    own_session = session is None
    if session is None:
        dialog = LoginDialog(vault, demo_codes=demo_codes)
        after_first_paint(dialog, _import_after_login)  # (installed first: runs after the mark)
        mark_first_paint(dialog, "gui.login")
        if dialog.exec() != QDialog.DialogCode.Accepted or dialog.session is None:
            return 1
        trace.mark("gui.accepted")
        session = dialog.session
    elif screenshot is None:
        session = required_reenrolment(vault, session)  # a recovery-code login from the command line
        if session is None:
            return 1
    from app.ui.main_window import MainWindow

    window: MainWindow | None = None
    try:
        window = MainWindow(vault, session, layout=layout, quiet=screenshot is not None,
                            demo_codes=demo_codes)
        window.refresh()
        if vault.read_only:
            window.downtime_banner.show_emergency()
        if open_study:
            window.open_study(open_study)
        if screenshot is not None:
            return _screenshot(app, window, screenshot)
        from app.audit.repository import sync_job
        from app.net.watch import pacs_job
        from app.ui.audit_sync_status import AuditSyncStatus
        from app.ui.bridge import Bridge

        jobs, scp = [], None
        if vault.embedded:  # (a service client: the service forwards, watches and receives)
            indicator = AuditSyncStatus()
            window.statusBar().addPermanentWidget(indicator)
            jobs.append(sync_job(partial(vault.trail.forwarder, own_connection=True), indicator.report))
        if not vault.read_only:  # emergency mode: nothing received, nothing sent
            pacs_status = Bridge(window.downtime_banner.set_pacs_status, window)
            jobs.append(pacs_job(vault.watch_pacs, pacs_status.post))
        if vault.embedded and not vault.read_only:
            scp = _start_receiving(vault, window)
        for job in jobs:
            job.start()
        mark_first_paint(window, "gui.window")
        window.showMaximized()
        try:
            return app.exec()
        finally:
            if scp is not None:
                scp.stop()
            for job in jobs:
                job.stop()
    finally:
        current = window.session if window is not None else session
        if current is not None and (own_session or current is not session):
            try:
                vault.accounts.logout(current)
            except CustodianError as exc:
                print(exc, file=sys.stderr)


def _import_after_login() -> None:
    for name in AFTER_LOGIN:
        importlib.import_module(name)
    trace.mark("gui.prepared")


def _start_receiving(vault: Vault, window: MainWindow) -> StorageScp | None:
    """The storage SCP in the background, when there are PACS nodes to receive from."""
    try:
        scp = vault.pacs.storage_scp()
    except UsageError:
        return None  # no nodes yet: nobody could send
    try:
        scp.start()
    except OSError as exc:
        scp.stop()
        window.statusBar().showMessage(f"Receiving from the PACS is off: port {scp.port} cannot be used "
                                       f"({exc.strerror or exc}).")
        return None
    return scp


def _screenshot(app: QApplication, window: MainWindow, path: Path) -> int:
    """Paint the fully loaded window once and save it as PNG; problems go to stderr."""
    window.resize(*SCREENSHOT_SIZE)
    window.show()
    app.processEvents()  # lay out and paint before grabbing
    saved = window.grab().save(str(path), "PNG")
    window.close()
    problems = [*window.errors, *([] if saved else [f"The screenshot could not be written to {path}."])]
    for message in problems:
        print(message, file=sys.stderr)
    return 1 if problems else 0
