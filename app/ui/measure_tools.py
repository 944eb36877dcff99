"""The measuring half of a viewport's mouse: drawing, picking, moving, editing and deleting
measurements, and the probe and loupe that show while the button is held.

The viewport hands its left-button presses here first. A press on a measurement's line, handle or
label selects it (a drag moves it or its handle); a press elsewhere with a measuring tool starts a
new one, which is selected once made. A click that only brought the focus to the viewport (it was
not the viewport being worked in) never starts one: no stray point, no note dialog. An edit is
saved as the old measurement removed and the new one made, so the vault keeps no stale copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from PySide6.QtCore import QPoint, QPointF, QRect, QSize
from PySide6.QtGui import QImage, QPainter, QTransform
from PySide6.QtWidgets import QMenu

from app.imaging.measure import POINTS, Kind, Measurement, Point, label, modality_unit, polygon_area, probe
from app.imaging.shapes import distance_to_polyline, edited, handles, label_anchor, moved, nearest, outline
from app.ui.measure_painting import MEASURE_COLOUR, SELECTED_COLOUR, MeasurePainter
from app.ui.view_controls import MEASURING, Tool
from app.ui.view_painting import OverlayPainter

if TYPE_CHECKING:
    from app.ui.image_view import ImageView

PICK_REACH = 6.0  # screen pixels from a line, handle or label that still take hold of it
CLICK_SLOP = 3.0  # screen pixels a press may move and still be a click
FREEHAND_STEP = 3.0  # screen pixels between the points of a freehand outline
WORDED = (Kind.TEXT, Kind.ARROW)
GRIP = 5  # screen pixels round an end or corner that labels keep clear of
LABELS_KEPT = 256  # labels worked out (ROI statistics) kept for repainting


@dataclass
class _Edit:
    """A measurement being dragged: whole (``handle`` None) or by one of its handles."""

    original: Measurement
    handle: int | None
    start: Point  # image point where the drag began
    now: Measurement  # as dragged so far


class MeasureTools:
    """The measurements of ``view``'s series and what the mouse does to them."""

    def __init__(self, view: ImageView) -> None:
        self._view = view
        self.items: list[Measurement] = []
        self.selected: Measurement | None = None
        self.draft: list[Point] = []  # points of the measurement being drawn
        self.hover: Point | None = None
        self.probe_at: Point | None = None  # image point, while the probe is held
        self.loupe_at: QPointF | None = None  # widget point, while the loupe is held
        self.label_boxes: dict[Measurement, QRect] = {}  # where the last paint put the labels
        self._edit: _Edit | None = None
        self._pressed_at: QPointF | None = None  # the press that placed the last draft point
        self._swallowed = False  # a focusing click is under way: its release does nothing either
        self._deleted: list[list[Measurement]] = []  # for undo, the last deletion last
        self._labels: dict[Measurement, str] = {}

    def reset(self, items: list[Measurement]) -> None:
        self.items = list(items)
        self.selected = self._edit = self.hover = self.probe_at = self.loupe_at = None
        self.draft, self._deleted, self._labels, self.label_boxes = [], [], {}, {}

    def cancel(self, *, deselect: bool = False) -> None:
        """Drop the measurement being drawn (a new tool, slice or Esc), and the selection if asked."""
        self.draft, self.hover = [], None
        if deselect:
            self.selected = None
        self._view.update()

    def on_frame(self) -> list[Measurement]:
        series = self._view.series
        if series is None:
            return []
        sop_uid, frame = series.frame_of(self._view.index)
        return [m for m in self.items if m.sop_uid == sop_uid and m.frame == frame]

    def label(self, m: Measurement) -> str:
        key = replace(m, id=None)
        if key not in self._labels and len(self._labels) >= LABELS_KEPT:
            self._labels.clear()  # (every step of a drag is a shape of its own)
        if key not in self._labels:
            series = self._view.series
            assert series is not None
            info = series.info(self._view.index)
            values = self._view.frame_values() if m.kind not in (Kind.DISTANCE, Kind.ANGLE, Kind.COBB,
                                                                   *WORDED) else None
            self._labels[key] = label(m, values, info.pixel_spacing, modality_unit(series.modality))
        return self._labels[key]

    def adopt(self, saved: Measurement) -> None:
        """The vault's copy (with its number) takes the place of the unsaved one it was made from."""
        unsaved = replace(saved, id=None)
        self.items = [saved if m == unsaved else m for m in self.items]
        if saved not in self.items:
            self.items.append(saved)
        if self.selected == unsaved:
            self.selected = saved
        self._view.update()

    # ------------------------------------------------------------------ the mouse
    def press(self, pos: QPointF, tool: Tool, focusing: bool) -> bool:
        """A left press; False leaves it to the view (window, pan, zoom)."""
        view = self._view
        kind = MEASURING.get(tool)
        if tool is Tool.PROBE:
            self.probe_at = view.to_image(pos)
        elif tool is Tool.MAGNIFIER:
            self.loupe_at = QPointF(pos)
        elif focusing and not self.draft:  # it only brought the focus: nothing made, nothing picked
            self._swallowed = kind is not None
            return self._swallowed
        elif not self.draft:
            picked = self.pick(pos)
            self.selected = picked[0] if picked is not None else None
            if picked is not None:
                self._edit = _Edit(picked[0], picked[1], view.to_image(pos), picked[0])
            view.update()
            if picked is not None or kind is None:
                return picked is not None
        if kind is not None:  # the first point of a new measurement, or the next of one under way
            self._pressed_at = QPointF(pos)
            self._place(view.to_image(pos), kind)
        view.update()
        return True

    def move(self, pos: QPointF) -> bool:
        view = self._view
        point = view.to_image(pos)
        if self.probe_at is not None or self.loupe_at is not None:
            self.probe_at = point if self.probe_at is not None else None
            self.loupe_at = QPointF(pos) if self.loupe_at is not None else None
        elif self._edit is not None:
            start, original = self._edit.start, self._edit.original
            points = (moved(original.points, point[0] - start[0], point[1] - start[1])
                      if self._edit.handle is None else edited(original.kind, original.points,
                                                               self._edit.handle, point))
            self._edit.now = replace(original, points=points, id=None)
        elif self.draft and view.tool is Tool.FREEHAND:
            last = view.to_widget(self.draft[-1])
            if math.hypot(pos.x() - last.x(), pos.y() - last.y()) >= FREEHAND_STEP:
                self.draft.append(point)
        elif self.draft:
            self.hover = point
        else:
            return self._swallowed
        view.update()
        return True

    def release(self, pos: QPointF) -> bool:
        view = self._view
        if self._swallowed:
            self._swallowed = False
            return True
        if self.probe_at is not None or self.loupe_at is not None:
            self.probe_at = self.loupe_at = None
        elif self._edit is not None:
            edit, self._edit = self._edit, None
            if (edit.now.points, edit.now.text) != (edit.original.points, edit.original.text):
                self._replace(edit.original, edit.now)
        elif self.draft and view.tool is Tool.FREEHAND:
            points, self.draft = tuple(self.draft), []
            if len(points) >= 3 and polygon_area(points, None) > 1.0:
                self._finish(Kind.FREEHAND, points)
        elif self.draft and self._pressed_at is not None and view.tool in MEASURING \
                and math.hypot(pos.x() - self._pressed_at.x(), pos.y() - self._pressed_at.y()) > CLICK_SLOP:
            self._place(view.to_image(pos), MEASURING[view.tool])  # press-drag-release: the next point
        elif not self.draft:
            return False
        self._pressed_at = None
        view.update()
        return True

    def double_click(self, pos: QPointF) -> bool:
        """A double-click on an arrow or a note asks for its words."""
        picked = self.pick(pos)
        if picked is None or picked[0].kind not in WORDED:
            return False
        self.edit_text(picked[0])
        return True

    def pick(self, pos: QPointF) -> tuple[Measurement, int | None] | None:
        """The measurement under ``pos`` and which of its handles (None: its line or label); the
        selected one first, then the most recent. An ellipse's corners are handles only once selected."""
        shown = self.on_frame()
        order = ([self.selected] if self.selected in shown else []) + shown[::-1]
        at = (pos.x(), pos.y())
        for m in order:
            if m is self.selected or m.kind is not Kind.ELLIPSE:
                handle = nearest(at, self._screen(handles(m.kind, m.points)), PICK_REACH)
                if handle is not None:
                    return m, handle
            if any(distance_to_polyline(at, self._screen(line)) <= PICK_REACH
                   for line in outline(m.kind, m.points)):
                return m, None
            box = self.label_boxes.get(m)
            if box is not None and box.adjusted(-2, -2, 2, 2).contains(pos.toPoint()):
                return m, None
        return None

    # ------------------------------------------------------------------ making and unmaking
    def _place(self, point: Point, kind: Kind) -> None:
        self.draft.append(point)
        if len(self.draft) < POINTS.get(kind, math.inf):
            return  # more to come (a freehand outline ends when the button is let go)
        points, self.draft, self.hover = tuple(self.draft), [], None
        self._finish(kind, points)

    def _finish(self, kind: Kind, points: tuple[Point, ...]) -> None:
        view = self._view
        assert view.series is not None
        text = ""
        if kind is Kind.TEXT:
            text = view.ask_text("")
            if not text:
                return
        sop_uid, frame = view.series.frame_of(view.index)
        measurement = Measurement(kind, sop_uid, frame, points, text)
        self.items.append(measurement)
        self.selected = measurement
        view.update()
        view.measured.emit(measurement)

    def _replace(self, old: Measurement, new: Measurement) -> None:
        self.items[self.items.index(old)] = new
        self.selected = new
        self._view.update()
        self._view.measurementRemoved.emit(old)
        self._view.measured.emit(new)

    def edit_text(self, m: Measurement) -> None:
        text = self._view.ask_text(m.text)
        if text != m.text and (text or m.kind is Kind.ARROW) and m in self.items:
            self._replace(m, replace(m, text=text, id=None))

    def delete(self, doomed: list[Measurement]) -> None:
        doomed = [m for m in doomed if m in self.items]
        if not doomed:
            return
        self.items = [m for m in self.items if m not in doomed]
        self._deleted.append(doomed)
        if self.selected in doomed:
            self.selected = None
        self._view.update()
        for m in doomed:
            self._view.measurementRemoved.emit(m)

    def delete_selected(self) -> None:
        if self.selected is not None and self.selected in self.on_frame():
            self.delete([self.selected])

    def undo_delete(self) -> None:
        """The last deletion made again (saved anew)."""
        if not self._deleted:
            return
        back = [replace(m, id=None) for m in self._deleted.pop()]
        self.items += back
        self.selected = back[-1]
        self._view.update()
        for m in back:
            self._view.measured.emit(m)

    def menu(self, pos: QPointF) -> QMenu | None:
        """The right-click menu for ``pos`` (None when it would be empty)."""
        picked = self.pick(pos)
        menu = QMenu(self._view)
        if picked is not None:
            m = self.selected = picked[0]
            self._view.update()
            menu.addAction("Delete this measurement", lambda: self.delete([m]))
            if m.kind in WORDED:
                menu.addAction("Edit words…", lambda: self.edit_text(m))
        shown = self.on_frame()
        if shown:
            menu.addAction(f"Delete all on this image ({len(shown)})", lambda: self.delete(shown))
        if self._deleted:
            menu.addAction("Undo delete", self.undo_delete)
        return menu if menu.actions() else None

    # ------------------------------------------------------------------ painting
    def paint(self, painter: QPainter, overlay: OverlayPainter, transform: QTransform,
              image: QImage | None, obstacles: list[QRect]) -> None:
        view = self._view
        marks = MeasurePainter(painter, overlay, transform, view.rect())
        edit = self._edit
        shown = [edit.now if edit is not None and m is edit.original else m for m in self.on_frame()]
        chosen = edit.now if edit is not None else self.selected
        colours = [SELECTED_COLOUR if m == chosen else MEASURE_COLOUR for m in shown]
        for m, colour in zip(shown, colours, strict=True):
            marks.shape(m.kind, m.points, colour)
        if self.draft and view.tool in MEASURING:
            marks.draft(MEASURING[view.tool], self.draft + ([self.hover] if self.hover else []))
        if chosen in shown and chosen is not None:
            marks.handles(chosen.kind, chosen.points)
        labelled = [(m, self._anchor(m, marks), self.label(m), colour)
                    for m, colour in zip(shown, colours, strict=True)]
        grip = QSize(2 * GRIP + 1, 2 * GRIP + 1)
        grips = [QRect(marks.screen(p).toPoint() - QPoint(GRIP, GRIP), grip) for m in shown
                 if m == chosen or m.kind is not Kind.ELLIPSE for p in handles(m.kind, m.points)]
        boxes = marks.labels([item for item in labelled if item[2]], obstacles + grips)
        self.label_boxes = {edit.original if edit is not None and m is edit.now else m: box
                            for m, box in boxes.items()}
        if self.probe_at is not None and view.series is not None:
            marks.probe(marks.screen((round(self.probe_at[0]), round(self.probe_at[1]))),
                        probe(view.frame_values(), self.probe_at, modality_unit(view.series.modality)))
        if self.loupe_at is not None and image is not None:
            marks.loupe(image, self.loupe_at,
                        [(m.kind, m.points, colour) for m, colour in zip(shown, colours, strict=True)])

    def _anchor(self, m: Measurement, marks: MeasurePainter) -> QPointF:
        if m.kind in WORDED:  # words go at a note's point and an arrow's tail
            return marks.screen(m.points[0])
        lines = [p for line in outline(m.kind, m.points) for p in line]
        x, y = label_anchor([(q.x(), q.y()) for q in (marks.screen(p) for p in lines)])
        return QPointF(x, y)

    def _screen(self, points: list[Point]) -> list[Point]:
        mapped = [self._view.to_widget(p) for p in points]
        return [(q.x(), q.y()) for q in mapped]
