"""A dark theme for reading rooms: dim grey panels so the eye adapts to the black viewports."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

_COLOURS: dict[QPalette.ColorRole, str] = {
    QPalette.ColorRole.Window: "#2b2d30",
    QPalette.ColorRole.WindowText: "#d4d6d9",
    QPalette.ColorRole.Base: "#1f2023",
    QPalette.ColorRole.AlternateBase: "#24262a",
    QPalette.ColorRole.Text: "#d4d6d9",
    QPalette.ColorRole.PlaceholderText: "#7d8187",
    QPalette.ColorRole.Button: "#34373b",
    QPalette.ColorRole.ButtonText: "#d4d6d9",
    QPalette.ColorRole.BrightText: "#ff6b6b",
    QPalette.ColorRole.Highlight: "#2c5d94",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.ToolTipBase: "#3a3d41",
    QPalette.ColorRole.ToolTipText: "#e6e7e9",
    QPalette.ColorRole.Link: "#6ea8fe",
    QPalette.ColorRole.Light: "#3f4247",
    QPalette.ColorRole.Midlight: "#383b3f",
    QPalette.ColorRole.Mid: "#26282b",
    QPalette.ColorRole.Dark: "#1a1b1d",
    QPalette.ColorRole.Shadow: "#101112",
}
_DISABLED = "#6c7076"

STYLE_SHEET = """
QToolTip { color: #e6e7e9; background-color: #3a3d41; border: 1px solid #55595f; padding: 3px; }
QSplitter::handle { background: #1c1d20; }
QSplitter::handle:horizontal { width: 4px; }
QSplitter::handle:vertical { height: 4px; }
QHeaderView::section {
    background: #303337; color: #b9bcc1; padding: 4px 4px; border: none;
    border-right: 1px solid #24262a; border-bottom: 1px solid #24262a;
}
QTableView { border: 1px solid #1c1d20; selection-background-color: #2c5d94; }
QTableView::item { padding: 0px 4px; }
QLineEdit {
    background: #1f2023; border: 1px solid #45484d; border-radius: 3px; padding: 4px 6px;
    selection-background-color: #2c5d94;
}
QLineEdit:focus { border-color: #3d8ee6; }
QToolBar { background: #2b2d30; border: none; border-bottom: 1px solid #1c1d20; spacing: 2px; padding: 2px; }
QToolButton { padding: 3px 8px; border: 1px solid transparent; border-radius: 3px; }
QToolButton:hover { background: #3a3d41; border-color: #4a4e54; }
QToolButton:checked { background: #34475e; border-color: #3d8ee6; }
QStatusBar { background: #232528; color: #b9bcc1; border-top: 1px solid #1c1d20; }
QPushButton {
    background: #393c41; border: 1px solid #4a4e54; border-radius: 3px; padding: 5px 14px; min-width: 64px;
}
QPushButton:hover { background: #42464b; }
QPushButton:pressed { background: #2f3236; }
QPushButton:default { background: #2c5d94; border-color: #3d8ee6; color: #eef0f2; }
QPushButton:default:hover { background: #346aa6; }
QPushButton:disabled { background: #303236; border-color: #3a3d41; color: #6c7076; }
QPushButton[link="true"] {
    background: transparent; border: none; color: #6ea8fe; padding: 2px 0px; text-align: left; min-width: 0px;
}
QPushButton[link="true"]:hover { text-decoration: underline; }
QPushButton[link="true"]:disabled { color: #6c7076; }
QLabel[warning="true"] { color: #f0b44c; }
QLabel#downtime-banner { background: #5c4211; color: #fff1d0; padding: 6px 12px; font-weight: bold; }
QFrame#lock-card { background: #303337; border: 1px solid #3f4247; border-radius: 8px; }
QMenuBar { background: #2b2d30; }
QMenu { background: #2f3236; border: 1px solid #1c1d20; }
QMenu::item:selected { background: #2c5d94; }
"""


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")  # the one built-in style that follows a custom palette everywhere
    palette = QPalette()
    for role, colour in _COLOURS.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(_DISABLED))
    app.setPalette(palette)
    app.setStyleSheet(STYLE_SHEET)
