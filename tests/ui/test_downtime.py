"""The downtime banner: shown while the PACS does not answer, gone when it does, never a patient."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from app.net.watch import PacsStatus
from app.security.sessions import Session
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import PATIENT

BANNER = (0x5C, 0x42, 0x11)


def _banner_pixels(window: MainWindow) -> int:
    image = window.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = pixels[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
    return int((rgb == BANNER).all(axis=2).sum())


def test_banner_follows_the_pacs(qtbot: QtBot, vault: Vault, session: Session, ct_datasets: list) -> None:
    window = MainWindow(vault, session)
    qtbot.addWidget(window)
    window.resize(1100, 700)
    window.show()
    qtbot.waitExposed(window)
    window.refresh()
    assert not window.downtime_banner.isVisible() and _banner_pixels(window) == 0

    window.downtime_banner.set_pacs_status(PacsStatus("pacs", False, 2, "nothing is listening there"))
    assert window.downtime_banner.isVisible()
    text = window.downtime_banner.text()
    assert "The PACS (pacs) cannot be reached" in text and "2 sends wait" in text
    assert PATIENT.patient_id not in text and "Doe" not in text
    assert window.downtime_banner.toolTip() == "nothing is listening there"
    assert _banner_pixels(window) > 5000  # drawn across the top of the workspace
    assert window.browser.isVisible()  # the local study list stays usable

    window.downtime_banner.set_pacs_status(PacsStatus("pacs", True, 0))
    assert not window.downtime_banner.isVisible() and _banner_pixels(window) == 0


def test_the_banner_says_emergency_mode(qtbot: QtBot, vault: Vault, session: Session) -> None:
    window = MainWindow(vault, session)
    qtbot.addWidget(window)
    window.downtime_banner.show_emergency()
    assert window.downtime_banner.isVisibleTo(window)
    assert window.downtime_banner.text().startswith("Emergency mode: the PACS and the audit repository")
