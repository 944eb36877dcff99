"""What the File and User menus do besides reading: media in and out, sending to the PACS, the
users, the audit trail and the accounting of disclosures.

Each opens its own dialog or window, or works in the background, for the window's session; none
of them hangs images, so they live apart from the reading window's own code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt

from app.ui.admin_users import AdminUsersDialog
from app.ui.audit_viewer import AuditViewer
from app.ui.bridge import Bridge, in_background
from app.ui.disclosures_dialog import DisclosuresDialog
from app.ui.export_wizard import ExportWizard
from app.ui.import_dialog import ImportDialog, choose_import_paths
from app.ui.outside_media_dialog import OutsideMediaDialog
from app.vault import Vault
from app.vault.outbox import SendResult

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow


class Errands(QObject):
    """The menus' work for ``window`` that is not reading; it reports in the window's status bar."""

    def __init__(self, window: MainWindow, vault: Vault) -> None:
        super().__init__(window)
        self._window = window
        self._vault = vault
        self._audit_viewer: AuditViewer | None = None
        self._send_done = Bridge(self._sent, self)

    def show_audit_trail(self) -> AuditViewer | None:
        """The audit viewer, beside the main window; the lock closes (and drops) it."""
        window, session = self._window, self._window.session
        if session is None:
            return None
        viewer = self._audit_viewer
        if viewer is None:
            self._audit_viewer = viewer = AuditViewer(self._vault, session, window)
            viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            viewer.finished.connect(self._audit_viewer_closed)
            viewer.show()
            viewer.search()
        viewer.raise_()
        viewer.activateWindow()
        return viewer

    def export_media(self) -> ExportWizard | None:
        """The export wizard for the selected study's patient (their other studies can be added)."""
        window = self._window
        study_uid, session = window.browser.current_study_uid(), window.session
        study = window.studies.get(study_uid) if study_uid else None
        if study is None or session is None:
            window.show_error("Select a study of the patient whose images go on the media.")
            return None
        same_patient = [s for s in window.studies.values() if s.patient_key == study.patient_key]
        wizard = ExportWizard(self._vault, session, same_patient, study.study_uid, window)
        wizard.confirm_page.ended.connect(window.lock)  # the lock screen says why
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        wizard.show()
        return wizard

    def import_files(self, *, folder: bool) -> ImportDialog | None:
        """This site's own files or a folder, picked by the user, imported with progress shown."""
        window, session = self._window, self._window.session
        paths = choose_import_paths(window, folder=folder) if session is not None else []
        if session is None or not paths:
            return None
        dialog = ImportDialog(self._vault, session, paths, window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(window.refresh)
        dialog.show()
        dialog.start()
        return dialog

    def import_outside_media(self) -> None:
        if self._window.session is not None:
            OutsideMediaDialog(self._vault, self._window.session, self._window).exec()
            self._window.refresh()

    def show_disclosures(self) -> None:
        if self._window.session is not None:
            DisclosuresDialog(self._vault, self._window.session, self._window).exec()

    def manage_users(self) -> None:
        if self._window.session is not None:
            AdminUsersDialog(self._vault, self._window.session, self._window).exec()

    def send_current_study(self) -> None:
        """Send the selected study to the site's PACS, in the background; the status bar reports."""
        window, node = self._window, self._vault.nodes.pacs()
        study_uid, session = window.browser.current_study_uid(), window.session
        if study_uid is None or node is None or session is None:
            window.show_error("Select a study to send first." if node else
                              "No PACS node is set: an administrator adds one with 'custodian node add'.")
            return
        window.statusBar().showMessage(f"Sending to {node.name}…")
        in_background("send", lambda: self._vault.outbox.send(session, node.name, study_uid),
                      lambda result, error: self._send_done.post(result, error, node.name))

    def _audit_viewer_closed(self) -> None:
        self._audit_viewer = None

    def _sent(self, result: SendResult | None, error: str | None, node: str) -> None:
        window = self._window
        if result is None:
            window.show_error(f"The study could not be sent: {error}")
        elif result.queued:
            window.show_status(f"{node} cannot be reached now: the study waits in the outbox and goes out "
                               "when it is back.")
        elif result.report.failed:
            window.show_error(f"Sent {len(result.report.sent)} image(s) to {node}; "
                              f"{len(result.report.failed)} were refused: "
                              + "; ".join(sorted(set(result.report.failed.values()))))
        else:
            window.show_status(f"Sent {len(result.report.sent)} image(s) to {node}.")
