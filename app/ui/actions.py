"""The reading window's actions, menus and toolbar, wired to the window's slots.

They are built in one place so that the menus, the toolbar, the role's view of them and what the
lock switches off cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMessageBox, QToolBar

from app.security.roles import Action, Role, permits
from app.ui.tool_palette import ToolPalette
from app.ui.view_controls import CONTROLS_HELP

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

LAYOUT_SHORTCUTS = {"1x1": "Ctrl+1", "1x2": "Ctrl+2", "2x2": "Ctrl+4", "2x3": "Ctrl+6", "3x3": "Ctrl+9"}
BROWSER_HELP = (
    "Study list: select to list the series, Enter or double-click opens the study with the relevant "
    "prior beside it",
    "Timeline (above the series): the patient's studies, newest first, the relevant prior in amber; "
    "click to list, double-click to open",
    "Series list: select or double-click to show in the active viewport, or drag a series onto any "
    "viewport",
)


class WindowActions:
    """Builds the File, View, User and Help menus and the viewer toolbar of ``window``."""

    def __init__(self, window: MainWindow) -> None:
        self._window = window
        self.refresh = QAction("&Refresh study list", window, shortcut=QKeySequence("F5"),
                               toolTip="Reload the study list from the vault (F5)")
        self.refresh.triggered.connect(window.refresh)
        self.quit = QAction("&Quit", window, shortcut=QKeySequence("Ctrl+Q"),
                            toolTip="Quit Custodian (Ctrl+Q); asks first while series are open")
        self.quit.triggered.connect(lambda: self.confirm_quit() and window.close())
        self.reset = QAction("Reset &window", window,
                             toolTip="Reset the active viewport's window to the series default "
                                     "(R in a viewport)")
        self.reset.triggered.connect(lambda: window.grid.active.view.reset_window())
        self.send = QAction("&Send study to PACS", window, shortcut=QKeySequence("Ctrl+Shift+S"),
                            toolTip="Send the selected study to the PACS (Ctrl+Shift+S); while "
                                    "the PACS is down it waits and goes out when it is back")
        self.send.triggered.connect(window.errands.send_current_study)
        self.export = QAction("&Export media…", window, shortcut=QKeySequence("Ctrl+E"),
                              toolTip="Burn the selected patient's studies to encrypted USB or CD "
                                      "media, recorded as a disclosure (Ctrl+E)")
        self.export.triggered.connect(window.errands.export_media)
        self.import_files = QAction("Import &files…", window, shortcut=QKeySequence("Ctrl+O"),
                                    toolTip="Import DICOM files of this site into the vault, with a "
                                            "report of any file quarantined (Ctrl+O)")
        self.import_files.triggered.connect(lambda: window.errands.import_files(folder=False))
        self.import_folder = QAction("Import f&older…", window, shortcut=QKeySequence("Ctrl+Shift+O"),
                                     toolTip="Import every DICOM file in a folder and its subfolders "
                                             "(Ctrl+Shift+O)")
        self.import_folder.triggered.connect(lambda: window.errands.import_files(folder=True))
        self.outside = QAction("&Import outside media…", window, shortcut=QKeySequence("Ctrl+I"),
                               toolTip="Read a CD, USB stick, CD image or zip from elsewhere, see "
                                       "what is on it and import it (Ctrl+I)")
        self.outside.triggered.connect(window.errands.import_outside_media)
        self.sync = QAction("&Synchronise scrolling", window, checkable=True, checked=True,
                            shortcut=QKeySequence("S"),
                            toolTip="Scroll viewports of the same patient together, by slice "
                                    "position; turning it on keeps the slices now side by side (S)")
        self.sync.toggled.connect(window.grid.set_synchronised)
        self.mpr = QAction("3D / &MPR…", window, shortcut=QKeySequence("Ctrl+M"),
                           toolTip="Axial, coronal and sagittal planes, thick slabs, oblique and "
                                   "volume rendering of the active viewport's series (Ctrl+M)")
        self.mpr.triggered.connect(window.open_3d)
        self.smooth = QAction("S&mooth scaled images", window, checkable=True, checked=True,
                              shortcut=QKeySequence("Ctrl+Shift+I"),
                              toolTip="Interpolate images shown larger or smaller than 1:1; off shows "
                                      "each stored pixel as a block (Ctrl+Shift+I)")
        self.smooth.toggled.connect(self._set_smooth)
        self.per_series = QAction("One viewport per &series", window, shortcut=QKeySequence("Ctrl+0"),
                                  toolTip="A layout with a viewport for each series of the selected study, "
                                          "all of them hung (Ctrl+0)")
        self.per_series.triggered.connect(window.hang_per_series)
        self.controls = QAction("Viewer &controls", window, shortcut=QKeySequence("F1"),
                                toolTip="Mouse and keyboard controls of the viewports (F1)")
        self.controls.triggered.connect(
            lambda: QMessageBox.information(window, "Viewer controls", self.help_text()))
        self.layouts = self._layout_actions()
        self._connect_user_menu()
        self._add_menus()
        self.toolbar = self._add_toolbar()
        self.tools = ToolPalette(window.grid)  # the viewports' tools, the one in use pressed
        window.addToolBar(Qt.ToolBarArea.RightToolBarArea, self.tools)
        # Off while locked: no shortcut may reach the work behind the lock screen.
        self._work = [self.refresh, self.reset, self.sync, self.mpr, self.smooth, self.controls,
                      self.per_series, self.send, self.export, self.import_files, self.import_folder,
                      self.outside, *self.layouts.values(), *window.user_menu.actions(),
                      *window.reading_aids.actions(), *window.key_images.actions(), window.hanger.edit,
                      *window.presentation_states.actions()]

    def fit_role(self, role: Role) -> None:
        """Show only the actions ``role`` may use."""
        self.send.setVisible(permits(role, Action.SEND))
        self.export.setVisible(permits(role, Action.EXPORT))
        self.outside.setVisible(permits(role, Action.IMPORT_MEDIA))
        for action in (self.import_files, self.import_folder):
            action.setVisible(permits(role, Action.IMPORT))
        self._window.reading_aids.fit_role(role)
        self._window.key_images.fit_role(role)
        self._window.presentation_states.fit_role(role)

    def help_text(self) -> str:
        """The viewports' controls, the browser's, and every shortcut of the window's own actions."""
        shortcuts = sorted({f"{action.shortcut().toString()}: {action.text().replace('&', '')}"
                            for action in self._window.findChildren(QAction)
                            if not action.shortcut().isEmpty()})
        return "\n".join(["In a viewport:", *CONTROLS_HELP, "", "Study browser:", *BROWSER_HELP, "",
                          "Window:", *shortcuts])

    def confirm_quit(self) -> bool:
        """Whether to quit: asked first while series are open (or put away by the lock), so that no
        slip of Ctrl+Q or the close button ends a reading session."""
        window = self._window
        open_series = sum(1 for v in window.grid.viewports if v.series_uid) + window.keeper.put_away
        if not open_series:
            return True
        buttons = QMessageBox.StandardButton
        box = QMessageBox(QMessageBox.Icon.Question, "Quit Custodian",
                          f"{open_series} series {'is' if open_series == 1 else 'are'} open. Quit Custodian "
                          "and end this reading session?", buttons.Yes | buttons.Cancel, window)
        box.button(buttons.Yes).setText("&Quit")
        box.setDefaultButton(buttons.Cancel)
        return box.exec() == buttons.Yes

    def _set_smooth(self, on: bool) -> None:
        for viewport in self._window.grid.viewports:
            viewport.view.set_smooth(on)

    def set_available(self, available: bool) -> None:
        """Menus, toolbar and shortcuts come and go with the workspace (the lock hides them)."""
        self._window.menuBar().setVisible(available)
        self.toolbar.setVisible(available)
        self.tools.setVisible(available)
        for action in self._work:
            action.setEnabled(available)

    def _layout_actions(self) -> dict[str, QAction]:
        group = QActionGroup(self._window)
        layouts: dict[str, QAction] = {}
        for name, shortcut in LAYOUT_SHORTCUTS.items():
            label = name.replace("x", "×")
            action = QAction(label, group, checkable=True, shortcut=QKeySequence(shortcut),
                             toolTip=f"{label} viewport layout ({shortcut})")
            action.triggered.connect(lambda _=False, name=name: self._window.set_layout(name))
            layouts[name] = action
        return layouts

    def _connect_user_menu(self) -> None:
        window = self._window
        menu, keeper, errands = window.user_menu, window.keeper, window.errands
        menu.lock_action.triggered.connect(lambda: keeper.lock())
        menu.switch_action.triggered.connect(keeper.switch_user)
        menu.logout_action.triggered.connect(keeper.log_out)
        menu.password_action.triggered.connect(keeper.change_password)
        menu.reenrol_action.triggered.connect(keeper.set_up_authenticator)
        menu.users_action.triggered.connect(errands.manage_users)
        menu.audit_action.triggered.connect(errands.show_audit_trail)
        menu.disclosures_action.triggered.connect(errands.show_disclosures)

    def _add_menus(self) -> None:
        bar = self._window.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.refresh)
        file_menu.addAction(self.send)
        file_menu.addAction(self.export)
        file_menu.addAction(self.import_files)
        file_menu.addAction(self.import_folder)
        file_menu.addAction(self.outside)
        file_menu.addActions([self._window.reading_aids.copy, self._window.reading_aids.save])
        file_menu.addSeparator()
        file_menu.addAction(self.quit)
        view_menu = bar.addMenu("&View")
        layout_menu = view_menu.addMenu("&Layout")
        layout_menu.addActions(list(self.layouts.values()))
        layout_menu.addSeparator()
        layout_menu.addAction(self.per_series)
        layout_menu.addAction(self._window.hanger.edit)
        view_menu.addAction(self.reset)
        view_menu.addAction(self.sync)
        view_menu.addAction(self.mpr)
        view_menu.addAction(self.smooth)
        view_menu.addActions([self._window.reading_aids.tags, self._window.reading_aids.show_strip])
        view_menu.addSeparator()
        view_menu.addActions(self._window.key_images.actions())
        view_menu.addActions(self._window.presentation_states.actions())
        bar.addMenu(self._window.user_menu)
        bar.addMenu("&Help").addAction(self.controls)

    def _add_toolbar(self) -> QToolBar:
        toolbar = QToolBar("Viewer")
        toolbar.setObjectName("viewer-toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        toolbar.addAction(self.refresh)
        toolbar.addSeparator()
        toolbar.addActions(list(self.layouts.values()))
        toolbar.addSeparator()
        toolbar.addAction(self.reset)
        toolbar.addAction(self.sync)
        toolbar.addAction(self.mpr)
        toolbar.addAction(self._window.key_images.mark)
        toolbar.addAction(self._window.presentation_states.choose)  # (a drop-down, as Weasis' PR)
        self._window.addToolBar(toolbar)
        self.sync.setIconText("Sync")
        self.mpr.setIconText("3D")
        self.refresh.setIconText("Refresh")
        self.reset.setIconText("Reset W/L")
        return toolbar
