"""The banner above the reading area while Custodian reads from its cache alone: the PACS does
not answer, or the whole run is in emergency mode. It never names a patient."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QWidget

from app.net.watch import PacsStatus
from app.ui.wording import counted


class DowntimeBanner(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setObjectName("downtime-banner")
        self.hide()

    def show_emergency(self) -> None:
        """Emergency mode; it stays for the whole run."""
        self.setText("Emergency mode: the PACS and the audit repository are both down. You are reading "
                     "from the local cache, which is read-only: nothing can be imported, sent or exported "
                     "until Custodian starts normally.")
        self.show()

    def set_pacs_status(self, status: PacsStatus) -> None:
        """Shown while the site's PACS does not answer (reading goes on)."""
        if status.node is None or status.reachable:
            self.hide()
            return
        waiting = (f" {counted(status.waiting, 'send waits', 'sends wait')} and will go out when it is back."
                   if status.waiting else "")
        self.setText(f"The PACS ({status.node}) cannot be reached: you are reading from the local cache; "
                     f"studies and priors stored here stay available.{waiting}")
        self.setToolTip(status.error or "")
        self.show()
