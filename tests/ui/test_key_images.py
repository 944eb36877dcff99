"""Marking key images while reading: Ctrl+K frames the image in gold in the painted view (only
while that image is shown), the study's list shows the marks and a click brings one back."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from app.security.sessions import Session
from app.ui.main_window import MainWindow
from app.vault import Vault


def _gold(pixels: np.ndarray) -> int:
    """Pixels of the key image marker's gold (the CT's greys and the UI's blues are never this)."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return int(((r > 230) & (g > 170) & (g < 230) & (b < 90)).sum())


def test_ctrl_k_frames_the_key_image_and_the_list_brings_it_back(
        qtbot: QtBot, vault: Vault, session: Session, ct_datasets: list[Dataset],
        open_window: Callable[..., MainWindow], grab_pixels: Callable[[QWidget], np.ndarray]) -> None:
    window = open_window(session)
    assert window.open_study(ct_datasets[0].StudyInstanceUID)
    view = window.grid.active.view
    view.set_index(4)
    assert _gold(grab_pixels(view)) == 0
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keySequence(window, "Ctrl+K")
    framed = _gold(grab_pixels(view))
    assert framed > 2 * (view.width() + view.height())  # a frame all round, three pixels wide
    assert "key image" in window.statusBar().currentMessage()

    view.set_index(5)
    assert _gold(grab_pixels(view)) == 0  # another image: no marker
    listing = window.key_images.show_list()
    assert listing is not None and listing.items.count() == 1
    qtbot.mouseClick(listing.items.viewport(), Qt.MouseButton.LeftButton,
                     pos=listing.items.visualItemRect(listing.items.item(0)).center())
    assert view.index == 4 and _gold(grab_pixels(view)) == framed
    listing.close()

    window.key_images.toggle()  # the mark taken away again
    assert _gold(grab_pixels(view)) == 0
    assert vault.key_images.of_study(session, ct_datasets[0].StudyInstanceUID) == []
