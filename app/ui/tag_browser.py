"""The tag browser: every attribute of the image in the active viewport, sequences expandable,
narrowed by a filter on tag, keyword or value.

The rows come from the vault (:meth:`ReadingService.attributes`), which withholds what the role
may not be shown and records the access; this dialog only displays them.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QDialog, QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from app.imaging.tags import TagRow, matching
from app.ui.wording import counted

COLUMNS = ("Tag", "VR", "Keyword", "Value")


class TagBrowser(QDialog):
    def __init__(self, rows: list[TagRow], title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # its rows go with it
        self.resize(760, 620)
        self._rows = rows
        self.filter_edit = QLineEdit(placeholderText="Filter by tag, keyword or value")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip("Shows the attributes whose tag, keyword or value contains this text, "
                                    "with the sequences they are in")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setUniformRowHeights(True)
        self.tree.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.count = QLabel()
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.count)
        self.filter_edit.textChanged.connect(self._show)
        self._show("")
        for column, width in enumerate((110, 40, 240)):
            self.tree.setColumnWidth(column, width)

    def shown_rows(self) -> list[tuple[str, ...]]:
        """(tag, VR, keyword, value) of every row the tree holds, in order, depth first."""
        found: list[tuple[str, ...]] = []

        def walk(item: QTreeWidgetItem | None) -> None:
            if item is None:
                return
            found.append(tuple(item.text(c) for c in range(len(COLUMNS))))
            for n in range(item.childCount()):
                walk(item.child(n))

        for n in range(self.tree.topLevelItemCount()):
            walk(self.tree.topLevelItem(n))
        return found

    def _show(self, text: str) -> None:
        """The rows matching ``text`` as a tree; while filtering every sequence is open."""
        rows = matching(self._rows, text)
        self.tree.clear()
        parents: list[QTreeWidgetItem] = []  # the open items, by depth
        for row in rows:
            item = QTreeWidgetItem([row.tag, row.vr, row.keyword, row.value])
            item.setToolTip(3, row.value)
            del parents[row.depth:]
            if parents:
                parents[-1].addChild(item)
            else:
                self.tree.addTopLevelItem(item)
            parents.append(item)
        if text.strip():
            self.tree.expandAll()
        attributes = sum(1 for row in self._rows if row.tag)
        shown = sum(1 for row in rows if row.tag)
        self.count.setText(counted(attributes, "attribute") if shown == attributes
                           else f"{shown} of {counted(attributes, 'attribute')}")

