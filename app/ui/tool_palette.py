"""The tool strip: which tool the left mouse button has in the viewports, always in sight.

One checkable button per tool, the one in use pressed. Choosing a tool here, or by its key in a
viewport, gives it to every viewport, so what the strip shows is what a click will do wherever the
reader clicks. The keys are the viewports' own (named in each button's tooltip): they work while a
viewport has the focus and never reach the study list.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QToolBar

from app.ui.view_controls import TOOLS, Tool
from app.ui.viewport_grid import ViewportGrid


class ToolPalette(QToolBar):
    """A vertical strip of the tools of ``grid``'s viewports."""

    def __init__(self, grid: ViewportGrid) -> None:
        super().__init__("Tools")
        self.setObjectName("tool-palette")
        self.setMovable(False)
        self.setOrientation(Qt.Orientation.Vertical)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self._grid = grid
        group = QActionGroup(self)
        group.setExclusive(True)
        self.tool_actions: dict[Tool, QAction] = {}
        for tool, info in TOOLS.items():
            if tool is Tool.DISTANCE or tool is Tool.PROBE:
                self.addSeparator()  # navigating | measuring | reading the pixels
            action = QAction(info.name, group, checkable=True, checked=tool is Tool.WINDOW,
                             toolTip=f"{info.does} ({info.key_name} in a viewport)")
            action.triggered.connect(lambda _=False, tool=tool: self.choose(tool))
            self.addAction(action)
            self.tool_actions[tool] = action
        for viewport in grid.viewports:
            viewport.view.toolChanged.connect(self.choose)

    @property
    def tool(self) -> Tool:
        return next(t for t, action in self.tool_actions.items() if action.isChecked())

    def choose(self, tool: Tool) -> None:
        """``tool`` for every viewport, its button pressed."""
        self.tool_actions[tool].setChecked(True)
        for viewport in self._grid.viewports:
            viewport.view.set_tool(tool)
