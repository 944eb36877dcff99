"""Presentation states in the reading window: saving the reader's measurements, notes, window and
rotation of the active viewport's series as one (sent to the PACS with the study), and choosing one
of those that apply to the series, as Weasis offers them: choosing applies its window or VOI LUT,
rotation and flip and displayed area, and draws its graphic and text annotations over the image, in
a layer of their own.

The vault decides which states apply (only the series' own patient's); this module shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QAction, QColor, QCursor, QKeySequence, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import QMenu, QWidget

from app.imaging.gsps import Note, PresentationState, StateSummary, polyline, state_turn, view_turn
from app.security.roles import Action, Role, permits
from app.ui.view_painting import OUTLINE_COLOUR
from app.ui.viewport_grid import Viewport

if TYPE_CHECKING:
    from app.ui.image_view import ImageView
    from app.ui.main_window import MainWindow
    from app.vault import Vault

STATE_COLOUR = QColor(255, 150, 60)  # apart from the reader's own measurements (green)
NONE_CHOSEN = "None (as stored)"


class StateLayer(QWidget):
    """A presentation state's annotations over an :class:`ImageView`, through its image-to-widget
    mapping, on the images and frames the state names (and only while its series is shown)."""

    def __init__(self, viewport: Viewport) -> None:
        super().__init__(viewport.view)
        self._viewport = viewport
        self.state: PresentationState | None = None
        self.series_uid: str | None = None
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.setGeometry(viewport.view.rect())
        viewport.view.installEventFilter(self)
        self.show()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:
            self.setGeometry(self._viewport.view.rect())
        return False

    def current(self) -> PresentationState | None:
        """The state applied, while the series it was chosen for is still shown."""
        return self.state if self.series_uid and self._viewport.series_uid == self.series_uid else None

    def paintEvent(self, event: QPaintEvent) -> None:
        view: ImageView = self._viewport.view
        state = self.current()
        if state is None or view.series is None:
            return
        sop_uid, frame = view.series.frame_of(view.index)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for annotation in state.drawn_on(sop_uid, frame):
            for graphic in annotation.graphics:
                points = [view.to_widget(p) for p in polyline(graphic)]
                for colour, width in ((OUTLINE_COLOUR, 3.5), (STATE_COLOUR, 1.5)):
                    painter.setPen(QPen(colour, width))
                    if len(points) == 1:
                        painter.drawEllipse(points[0], 2, 2)
                    else:
                        painter.drawPolyline(QPolygonF(points))
            for note in annotation.notes:
                self._note(painter, view, note)

    def _note(self, painter: QPainter, view: ImageView, note: Note) -> None:
        metrics = painter.fontMetrics()
        if note.box is not None:
            corner = view.to_widget(note.box[:2])
        else:
            assert note.anchor is not None  # (a note has one or the other: app.imaging.gsps)
            corner = view.to_widget(note.anchor) + QPointF(8, 8)
        lines = note.text.splitlines() or [""]
        box = QRectF(corner, QPointF(corner.x() + max(metrics.horizontalAdvance(t) for t in lines) + 4,
                                     corner.y() + metrics.height() * len(lines) + 2))
        if note.anchor is not None and note.box is None:
            painter.setPen(QPen(STATE_COLOUR, 1))
            painter.drawLine(view.to_widget(note.anchor), corner)
        painter.setPen(OUTLINE_COLOUR)
        painter.drawText(box.translated(1, 1), Qt.AlignmentFlag.AlignLeft, note.text)
        painter.setPen(STATE_COLOUR)
        painter.drawText(box, Qt.AlignmentFlag.AlignLeft, note.text)


class PresentationStates(QObject):
    def __init__(self, window: MainWindow, vault: Vault) -> None:
        super().__init__(window)
        self._window, self._vault = window, vault
        self._layers: dict[int, StateLayer] = {}  # by viewport (id)
        self.save = QAction("Save &presentation state", window, shortcut=QKeySequence("Ctrl+Shift+G"),
                            toolTip="Save your measurements, notes, window and rotation of the active "
                                    "viewport's series as a presentation state in the study; it goes to "
                                    "the PACS when the study is sent (Ctrl+Shift+G)")
        self.save.triggered.connect(lambda: self.save_state())
        self.menu = QMenu("Presentation s&tates", window)
        self.menu.setToolTipsVisible(True)
        self.menu.aboutToShow.connect(self._fill_menu)
        self.choose = QAction("Presentation s&tates…", window, shortcut=QKeySequence("Ctrl+G"),
                              toolTip="Choose a presentation state of the active viewport's series: "
                                      "its window, rotation and annotations are applied (Ctrl+G)")
        self.choose.setMenu(self.menu)
        self.choose.setIconText("PR")
        self.choose.triggered.connect(lambda: self.menu.popup(QCursor.pos()))

    def actions(self) -> list[QAction]:
        return [self.save, self.choose]

    def fit_role(self, role: Role) -> None:
        self.save.setVisible(permits(role, Action.MEASURE))
        self.choose.setVisible(permits(role, Action.VIEW_IMAGES))

    def point_to(self) -> bool:
        """A presentation state's series was opened: it has no images, so nothing is hung (False)
        and the reader is told where states are chosen."""
        self._window.show_status("A presentation state is applied to the images it refers to: with them in "
                                 "a viewport, choose it under PR on the toolbar (Ctrl+G).")
        return False

    def layer(self, viewport: Viewport) -> StateLayer:
        if id(viewport) not in self._layers:
            self._layers[id(viewport)] = StateLayer(viewport)
        return self._layers[id(viewport)]

    def save_state(self) -> StateSummary | None:
        """The active viewport's series, as the reader sees it, saved as a presentation state."""
        viewport, window = self._window.grid.active, self._window
        if viewport.series_uid is None or window.locked:
            return None
        view = viewport.view
        rotation, flip = view_turn(*view.turn)
        saved = window.ask(self._vault.states.save_state, window.session, viewport.series_uid,
                           view.chosen_window or view.window, rotation, flip)
        if saved is not None:
            window.show_status("Presentation state saved in the study; it goes to the PACS with the study.")
        return saved

    def listed(self, viewport: Viewport | None = None) -> list[StateSummary]:
        """The presentation states that apply to the series in ``viewport`` (the active one)."""
        viewport = viewport or self._window.grid.active
        if viewport.series_uid is None or self._window.locked:
            return []
        return self._window.ask(self._vault.states.states, self._window.session, viewport.series_uid) or []

    def apply(self, sop_uid: str | None, viewport: Viewport | None = None) -> bool:
        """Show ``viewport``'s series through the state ``sop_uid`` (None: as stored, without one)."""
        viewport = viewport or self._window.grid.active
        series_uid, view, layer = viewport.series_uid, viewport.view, self.layer(viewport)
        if series_uid is None or self._window.locked:
            return False
        state = None if sop_uid is None else self._window.ask(self._vault.states.state, self._window.session,
                                                              series_uid, sop_uid)
        view.reset_view()
        view.reset_window()
        layer.state, layer.series_uid = state, series_uid if state is not None else None
        if state is not None:
            _turn(view, state)
            view.set_invert(state.inverse)
            found = state.voi_for(view.series.frame_of(view.index)[0]) if view.series is not None else None
            window = found.as_window() if found is not None else None
            if window is not None:
                view.set_window(window)
            self._area(view, state)
        layer.update()
        return state is not None or sop_uid is None

    def _area(self, view: ImageView, state: PresentationState) -> None:
        """The state's displayed area: filling the viewport, or magnified, in its middle."""
        if view.series is None:
            return
        info = view.series.info(view.index)
        area = state.area_for(info.sop_uid)
        if area is None or area.whole(info.rows, info.columns):
            return
        zoom = area.zoom(view.pixel_aspect, view.turn[0], view.width(), view.height())
        view.centre_on(area.centre, zoom)
        if area.fitted_instead:
            self._window.show_status("This presentation state asks for its area at true size; it is shown "
                                     "fitted to the viewport instead.")

    def _fill_menu(self) -> None:
        self.menu.clear()
        viewport = self._window.grid.active
        current = self.layer(viewport).current()
        none = self.menu.addAction(NONE_CHOSEN)
        none.setCheckable(True)
        none.setChecked(current is None)
        none.triggered.connect(lambda: self.apply(None, viewport))
        for summary in self.listed(viewport):
            words = " · ".join(p for p in (summary.label, summary.creator, summary.created) if p)
            action = self.menu.addAction(words)
            action.setToolTip(summary.description)
            action.setCheckable(True)
            action.setChecked(current is not None and current.summary.sop_uid == summary.sop_uid)
            action.triggered.connect(lambda _=False, uid=summary.sop_uid: self.apply(uid, viewport))


def _turn(view: ImageView, state: PresentationState) -> None:
    rotation, flip = state_turn(state)
    if rotation:
        view.rotate(rotation)
    if flip:
        view.flip(True)
