"""What a reader reaches for beside the images: the tag browser, the series strip, and copying or
saving a view (a disclosure). The window builds this once; the menus take its actions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QSplitter, QWidget

from app.security.roles import Action, Role, permits
from app.ui.series_strip import SeriesStrip, StripKeeper
from app.ui.tag_browser import TagBrowser
from app.ui.view_copy_dialog import ViewCopyDialog
from app.vault import Vault

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

STRIP_SETTING = "reading/series_strip"  # remembered between sessions (not patient data)


def settings() -> QSettings:
    return QSettings("Custodian", "workstation")


class ReadingAids(QObject):
    def __init__(self, window: MainWindow, vault: Vault) -> None:
        super().__init__(window)
        self._window, self._vault = window, vault
        self.strip = SeriesStrip()
        splitter = window.grid.parentWidget()
        if isinstance(splitter, QSplitter):  # beside the viewports, in the grid's place in the splitter
            at = splitter.indexOf(window.grid)
            beside = QWidget()
            beside.setSizePolicy(window.grid.sizePolicy())
            splitter.insertWidget(at, beside)
            row = QHBoxLayout(beside)
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(2)
            row.addWidget(self.strip)
            row.addWidget(window.grid, 1)  # (taken out of the splitter)
        self.strip_keeper = StripKeeper(window, vault, self.strip)
        self.tags = QAction("Image &attributes…", window, shortcut=QKeySequence("Ctrl+T"),
                            toolTip="Every DICOM attribute of the image in the active viewport, searchable "
                                    "(Ctrl+T); what your role may not see is withheld")
        self.tags.triggered.connect(self.browse_tags)
        self.show_strip = QAction("Series s&trip", window, checkable=True, shortcut=QKeySequence("Ctrl+B"),
                                  toolTip="Thumbnails of the open study's series beside the viewports "
                                          "(Ctrl+B)")
        self.show_strip.setChecked(bool(settings().value(STRIP_SETTING, True, bool)))
        self.strip.setVisible(self.show_strip.isChecked())
        self.show_strip.toggled.connect(self.set_strip_shown)
        self.copy = QAction("&Copy image…", window, shortcut=QKeySequence("Ctrl+Shift+C"),
                            toolTip="Copy the active viewport's image, recorded as a disclosure "
                                    "(Ctrl+Shift+C)")
        self.copy.triggered.connect(lambda: self.copy_view())
        self.save = QAction("Save ima&ge…", window, shortcut=QKeySequence("Ctrl+Shift+P"),
                            toolTip="Save the active viewport's image as PNG, recorded as a disclosure "
                                    "(Ctrl+Shift+P)")
        self.save.triggered.connect(self._save_view)

    def actions(self) -> list[QAction]:
        return [self.tags, self.show_strip, self.copy, self.save]

    def fit_role(self, role: Role) -> None:
        self.tags.setVisible(permits(role, Action.VIEW_IMAGES))
        self.show_strip.setVisible(permits(role, Action.VIEW_IMAGES))
        self.strip.setVisible(self.show_strip.isChecked() and permits(role, Action.VIEW_IMAGES))
        for action in (self.copy, self.save):
            action.setVisible(permits(role, Action.COPY_VIEW))

    def set_strip_shown(self, on: bool) -> None:
        """Show or hide the strip, and remember it for the next session."""
        settings().setValue(STRIP_SETTING, on)
        self.strip.setVisible(on)
        self.strip_keeper.follow(again=True)

    def browse_tags(self) -> TagBrowser | None:
        """The attributes of the image in the active viewport, as the vault gives them (withheld
        where the role may not see them, and recorded as an access)."""
        window = self._window
        view = window.grid.active.view
        if view.series is None:
            window.show_error("Show an image first: the attributes listed are those of the image in the "
                              "active viewport.")
            return None
        sop_uid, _frame = view.series.frame_of(view.index)
        rows = window.ask(self._vault.reading.attributes, window.session, sop_uid)
        if rows is None:
            return None
        browser = TagBrowser(rows, f"Attributes of image {view.index + 1} of {len(view.series)}", window)
        browser.show()
        return browser

    def copy_view(self, out: Path | None = None) -> ViewCopyDialog | None:
        """The copy (or, to ``out``, save) dialog for the active viewport's image, opened modal."""
        window = self._window
        viewport = window.grid.active
        if window.session is None or viewport.series_uid is None or viewport.view.series is None:
            window.show_error("Show an image first: the image copied is the one in the active viewport.")
            return None
        dialog = ViewCopyDialog(self._vault, window.session, viewport.view, viewport.series_uid, out, window)
        dialog.accepted.connect(lambda: window.show_status(
            f"Image {'saved' if out else 'copied'}; recorded in the patient's accounting of disclosures."))
        dialog.open()
        return dialog

    def _save_view(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self._window, "Save image", "image.png", "PNG image (*.png)")
        if name:
            self.copy_view(Path(name).with_suffix(".png"))
