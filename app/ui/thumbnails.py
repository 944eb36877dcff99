"""Thumbnails of the listed study's series, decoded in the background (one audited access).

They are asked for only once the reader pauses on a study: arrowing down the list is not asking
for every study's images. An answer for a study no longer listed, or from before a lock or
another user's login, is dropped: it must never appear on someone else's screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, QTimer

from app.security.roles import Action, permits
from app.ui.bridge import Bridge, in_background
from app.vault import Vault

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

THUMBNAIL_DELAY_MS = 250


class Thumbnails(QObject):
    """Fills ``window``'s series list with thumbnails of its listed study; or, given ``study`` and
    ``show``, whatever shows the thumbnails of the study ``study()`` names (the series strip)."""

    def __init__(self, window: MainWindow, vault: Vault, *, study: Callable[[], str | None] | None = None,
                 show: Callable[[dict[str, np.ndarray]], None] | None = None,
                 delay_ms: int = THUMBNAIL_DELAY_MS) -> None:
        super().__init__(window)
        self._window = window
        self._vault = vault
        self._study = study or (lambda: window.listed_study)
        self._show_pictures = show or window.browser.set_thumbnails
        self._ticket = 0  # answers to older requests are dropped
        self._ready = Bridge(self._show, self)
        self._timer = QTimer(self, singleShot=True, interval=delay_ms)
        self._timer.timeout.connect(self._load)

    def request(self) -> None:
        """Thumbnails for the study just listed, unless another is listed before the pause is over."""
        self._ticket += 1
        self._timer.start()

    def cancel(self) -> None:
        """Nothing asked for so far is loaded or shown."""
        self._timer.stop()
        self._ticket += 1

    def _load(self) -> None:
        session, study_uid, ticket = self._window.session, self._study(), self._ticket
        if session is None or study_uid is None or self._window.locked \
                or not permits(session.user.role, Action.VIEW_IMAGES):
            return
        # A failure (the session ended meanwhile, a busy vault) only means no thumbnails: opening
        # the series reports it plainly.
        in_background("thumbnails", lambda: self._vault.reading.thumbnails(session, study_uid),
                      lambda pictures, _error: self._ready.post(ticket, study_uid, pictures or {}))

    def _show(self, ticket: int, study_uid: str, pictures: dict[str, np.ndarray]) -> None:
        if ticket == self._ticket and study_uid == self._study() and not self._window.locked:
            self._show_pictures(pictures)
