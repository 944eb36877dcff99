"""Key images in the reading window: marking the active viewport's image (Ctrl+K), a gold frame
over every viewport while its image is one of the reader's key images, the list of the study's
key images (a click shows the image), and sending them to the PACS as a Key Object Selection
document. A document that arrives with a study is a series of its own ("Key images" in the series
strip and list); the vault shows under it only that study's images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import QDialog, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from app.security.roles import Action, Role, permits
from app.ui.viewport_grid import Viewport

if TYPE_CHECKING:
    from app.store.key_images import KeyImage
    from app.ui.main_window import MainWindow
    from app.vault import Vault

KEY_COLOUR = QColor(255, 200, 40)
FRAME_WIDTH = 3
FOLD = 12  # the corner fold's side: clear of the corner text, which starts 6 px in


class KeyMarker(QWidget):
    """A gold frame with a folded top-right corner over an image view, shown while its image is a
    key image; it takes no clicks."""

    def __init__(self, viewport: Viewport) -> None:
        super().__init__(viewport.view)
        self._view = viewport.view
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.setGeometry(self._view.rect())
        self._view.installEventFilter(self)
        self.hide()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:
            self.setGeometry(self._view.rect())
        return False

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setPen(QPen(KEY_COLOUR, FRAME_WIDTH))
        half = FRAME_WIDTH // 2
        painter.drawRect(self.rect().adjusted(half, half, -half - 1, -half - 1))
        right = float(self.width())
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(KEY_COLOUR)
        painter.drawPolygon(QPolygonF([QPointF(right - FOLD, 0), QPointF(right, 0), QPointF(right, FOLD)]))


class KeyImages(QObject):
    """The window's key images: its actions, the markers over the viewports and the list."""

    def __init__(self, window: MainWindow, vault: Vault) -> None:
        super().__init__(window)
        self._window, self._vault = window, vault
        self._marked: dict[str, set[tuple[str, int]]] = {}  # by study: the reader's (instance, frame)
        self._may_mark = False
        self.markers = {id(v): KeyMarker(v) for v in window.grid.viewports}
        for viewport in window.grid.viewports:
            viewport.view.indexChanged.connect(lambda _index, v=viewport: self._show(v))
            viewport.changed.connect(lambda v=viewport: self._show(v))
        window.grid.activeChanged.connect(self._show)
        self.mark = QAction("Mark &key image", window, checkable=True, shortcut=QKeySequence("Ctrl+K"),
                            toolTip="Mark the active viewport's image as a key image, or take the mark "
                                    "away (Ctrl+K); a gold frame shows it")
        self.mark.triggered.connect(lambda: self.toggle())
        self.listed = QAction("Key &images of this study…", window, shortcut=QKeySequence("Ctrl+Alt+K"),
                              toolTip="Your key images of the active viewport's study: click one to show "
                                      "it (Ctrl+Alt+K)")
        self.listed.triggered.connect(lambda: self.show_list())
        self.send = QAction("Send key images to PACS", window, shortcut=QKeySequence("Ctrl+Shift+K"),
                            toolTip="Send your key images of the active viewport's study to the PACS as a "
                                    "Key Object Selection document (Ctrl+Shift+K)")
        self.send.triggered.connect(lambda: self.send_marked())
        self.mark.setIconText("Key")
        self._list: KeyImageList | None = None

    def actions(self) -> list[QAction]:
        return [self.mark, self.listed, self.send]

    def fit_role(self, role: Role) -> None:
        """A new session: the actions its role may use, and nobody else's marks."""
        self._may_mark = permits(role, Action.KEY_IMAGES)
        self._marked.clear()
        for action in (self.mark, self.listed):
            action.setVisible(self._may_mark)
        self.send.setVisible(permits(role, Action.SEND_KEY_IMAGES))
        for viewport in self._window.grid.viewports:
            self._show(viewport)

    def is_key(self, viewport: Viewport) -> bool:
        """Whether the reader marked the image ``viewport`` shows."""
        shown = _shown(viewport)
        return shown is not None and (shown[1], shown[2]) in self._marks(shown[0])

    def toggle(self) -> KeyImage | None:
        """Mark the active viewport's image as a key image, or take the mark away."""
        window = self._window
        viewport = window.grid.active
        shown = _shown(viewport)
        if shown is None or window.session is None:
            self.mark.setChecked(False)
            window.show_error("Show an image first: the key image marked is the active viewport's.")
            return None
        study_uid, sop_uid, frame = shown
        on = not self.is_key(viewport)
        changed = window.ask(self._vault.key_images.mark, window.session, sop_uid, frame, on)
        self._marked.pop(study_uid, None)  # (read again: the vault's word, whatever happened)
        marks = self._marks(study_uid)
        for each in window.grid.viewports:
            self._show(each)
        state = "Marked as a key image" if self.is_key(viewport) else "Not a key image"
        window.show_status(f"{state}; {len(marks)} key image{'' if len(marks) == 1 else 's'} in this study.")
        if self._list is not None and self._list.isVisible():
            self.show_list()
        return changed

    def send_marked(self) -> bool:
        """Send the reader's key images of the active viewport's study to the PACS."""
        window = self._window
        shown = _shown(window.grid.active)
        if shown is None:
            window.show_error("Show an image of the study first: its key images are sent.")
            return False
        result = window.ask(self._vault.key_images.send, window.session, shown[0])
        if result is None:
            return False
        if result.sent:
            window.show_status(f"Key images ({result.images}) sent to '{result.node}'.")
        elif result.queued:
            window.show_status(f"'{result.node}' cannot be reached now: the key images wait in the outbox.")
        else:
            window.show_error(f"'{result.node}' did not take the key images: {result.error}.")
        window.reading_aids.strip_keeper.follow(again=True)  # the document is a series of the study now
        return result.sent or result.queued

    def show_list(self) -> KeyImageList | None:
        """The reader's key images of the active viewport's study; a click shows one."""
        window = self._window
        shown = _shown(window.grid.active)
        if shown is None or window.session is None:
            window.show_error("Show an image of the study first: its key images are listed.")
            return None
        marked = window.ask(self._vault.key_images.of_study, window.session, shown[0])
        if marked is None:
            return None
        self._marked[shown[0]] = {(k.sop_uid, k.frame) for k in marked}
        if self._list is None:
            self._list = KeyImageList(window)
            self._list.chosen.connect(self.go_to)
        self._list.fill(marked, window)
        self._list.show()
        return self._list

    def go_to(self, key: KeyImage) -> bool:
        """Show the key image ``key`` in the active viewport."""
        window = self._window
        viewport = window.grid.active
        if viewport.series_uid != key.series_uid and not window.load_series(key.series_uid, viewport):
            return False
        series = viewport.view.series
        index = next((i for i in range(len(series)) if series.frame_of(i) == (key.sop_uid, key.frame)),
                     None) if series is not None else None
        if index is None:
            window.show_error("This key image is no longer in its series.")
            return False
        viewport.view.set_index(index)
        return True

    def _marks(self, study_uid: str) -> set[tuple[str, int]]:
        """The reader's marks in a study, read from the vault once."""
        window = self._window
        if study_uid not in self._marked and self._may_mark and window.session is not None:
            found = window.ask(self._vault.key_images.of_study, window.session, study_uid)
            if found is None:
                return set()
            self._marked[study_uid] = {(k.sop_uid, k.frame) for k in found}
        return self._marked.get(study_uid, set())

    def _show(self, viewport: Viewport) -> None:
        key = self._may_mark and not self._window.locked and self.is_key(viewport)
        marker = self.markers[id(viewport)]
        marker.setVisible(key)
        marker.raise_()
        if viewport is self._window.grid.active:  # the toolbar's Key button pressed on a key image
            self.mark.setChecked(key)


class KeyImageList(QDialog):
    """The study's key images, one line each; a click shows one in the active viewport."""

    chosen = Signal(object)  # KeyImage

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWindowTitle("Key images")
        self.items = QListWidget()
        self.items.setObjectName("key-image-list")
        layout = QVBoxLayout(self)
        layout.addWidget(self.items)
        self.resize(320, 360)
        self._keys: list[KeyImage] = []
        self.items.itemClicked.connect(self._clicked)

    def fill(self, marked: list[KeyImage], window: MainWindow) -> None:
        self.items.clear()
        self._keys = list(marked)
        for key in marked:
            summary = window.series_summary(key.series_uid)
            series = f"Series {summary.number}" if summary is not None and summary.number is not None \
                else "Series"
            image = f"image {key.number}" if key.number is not None else "image"
            frame = f", frame {key.frame + 1}" if key.frame else ""
            self.items.addItem(QListWidgetItem(f"{series} · {image}{frame}"))
        if not marked:
            self.items.addItem(QListWidgetItem("No key images marked in this study (Ctrl+K marks one)."))


    def _clicked(self, item: QListWidgetItem) -> None:
        row = self.items.row(item)
        if row < len(self._keys):
            self.chosen.emit(self._keys[row])


def _shown(viewport: Viewport) -> tuple[str, str, int] | None:
    """(study, instance, frame) of the image ``viewport`` shows, or None."""
    series = viewport.view.series
    if viewport.series_uid is None or series is None:
        return None
    sop_uid, frame = series.frame_of(viewport.view.index)
    return series.info(viewport.view.index).study_uid, sop_uid, frame
