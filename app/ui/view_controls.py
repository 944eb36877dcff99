"""The reader's tools and keys in a viewport.

The key map is one table over :class:`~app.ui.image_view.ImageView`'s public methods: a key asks the
view for what a caller could, and the same table decides which keys the view claims from the
window's shortcuts and what they do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent

from app.imaging.display import CT_PRESETS
from app.imaging.measure import Kind

if TYPE_CHECKING:
    from app.ui.image_view import ImageView


class Tool(StrEnum):
    WINDOW = "window"
    PAN = "pan"
    ZOOM = "zoom"
    DISTANCE = "distance"
    ANGLE = "angle"
    COBB = "cobb"
    ARROW = "arrow"
    RECTANGLE = "rectangle"
    ELLIPSE = "ellipse"
    FREEHAND = "freehand"
    TEXT = "text"
    PROBE = "probe"
    MAGNIFIER = "magnifier"


@dataclass(frozen=True)
class ToolInfo:
    """How a tool is named on its button, its key in a viewport, and what it does."""

    name: str
    key: Qt.Key
    does: str

    @property
    def key_name(self) -> str:
        return "Esc" if self.key == Qt.Key.Key_Escape else chr(self.key)


TOOLS = {
    Tool.WINDOW: ToolInfo("W/L", Qt.Key.Key_Escape, "Window/level: drag left-right for the width, "
                          "up-down for the level (the default tool)"),
    Tool.PAN: ToolInfo("Pan", Qt.Key.Key_P, "Pan: drag the image"),
    Tool.ZOOM: ToolInfo("Zoom", Qt.Key.Key_Z, "Zoom: drag up to magnify, down to reduce"),
    Tool.DISTANCE: ToolInfo("Length", Qt.Key.Key_D, "Length: drag from one end to the other"),
    Tool.ANGLE: ToolInfo("Angle", Qt.Key.Key_A, "Angle: click an arm's end, the vertex, the other arm's end"),
    Tool.COBB: ToolInfo("Cobb", Qt.Key.Key_K, "Cobb angle: drag along one endplate, then along the other"),
    Tool.ARROW: ToolInfo("Arrow", Qt.Key.Key_W, "Arrow: drag from the tail to the head; double-click it "
                         "to add words"),
    Tool.RECTANGLE: ToolInfo("Rectangle", Qt.Key.Key_B, "Rectangle ROI: drag from corner to corner"),
    Tool.ELLIPSE: ToolInfo("Ellipse", Qt.Key.Key_E, "Ellipse ROI: drag the box the ellipse fills"),
    Tool.FREEHAND: ToolInfo("Freehand", Qt.Key.Key_L, "Freehand ROI: hold the button and draw round the "
                            "region; letting go closes it"),
    Tool.TEXT: ToolInfo("Text", Qt.Key.Key_T, "Text note: click where it goes"),
    Tool.PROBE: ToolInfo("Probe", Qt.Key.Key_G, "Pixel value: hold the button to read the stored value "
                         "(HU on CT) under the cursor"),
    Tool.MAGNIFIER: ToolInfo("Loupe", Qt.Key.Key_M, "Magnifier: hold the button for a 2× loupe at the "
                             "cursor"),
}
MEASURING = {Tool.DISTANCE: Kind.DISTANCE, Tool.ANGLE: Kind.ANGLE, Tool.COBB: Kind.COBB,
             Tool.ARROW: Kind.ARROW, Tool.RECTANGLE: Kind.RECTANGLE, Tool.ELLIPSE: Kind.ELLIPSE,
             Tool.FREEHAND: Kind.FREEHAND, Tool.TEXT: Kind.TEXT}
TOOL_KEYS = {info.key: tool for tool, info in TOOLS.items()}
PRESET_KEYS = [Qt.Key.Key_F2, Qt.Key.Key_F3, Qt.Key.Key_F4, Qt.Key.Key_F5, Qt.Key.Key_F6,
               Qt.Key.Key_F7, Qt.Key.Key_F8, Qt.Key.Key_F9]

CONTROLS_HELP = (
    "Mouse wheel, ↑/↓: previous / next image",
    "Page Up / Page Down: jump a tenth of the series; Home / End: first / last image",
    "Left-drag: the current tool (window by default); middle-drag: pan; right-drag: zoom",
    "Tools (the tool strip shows the one in use): "
    + "   ".join(f"{info.key_name}: {info.name}" for info in TOOLS.values()),
    "Esc: back to window/level (and cancel a measurement being drawn)",
    "Click a measurement or its label to select it; drag it to move it, drag a square handle to change it",
    "Delete / Backspace: delete the selected measurement   Ctrl+Z: undo the last delete   "
    "right-click: more",
    "R: reset the window   N: next stored window   "
    + "   ".join(f"F{i + 2}: {name}" for i, name in enumerate(CT_PRESETS)) + " (CT)",
    "I: invert   O: overlays on/off   F: fit   1: one image pixel per screen pixel",
    "[ / ]: rotate left / right   H: flip horizontally   V: flip vertically   Ctrl+R: reset view",
    "C: cine on/off   + / -: cine faster / slower   Ctrl+H: hide / show the text and markers",
)


def key_action(view: ImageView, event: QKeyEvent) -> Callable[[], object] | None:
    """What a key does in ``view``, or None when it is not one of the view's keys."""
    series = view.series
    if series is None:
        return None
    key, mods = Qt.Key(event.key()), event.modifiers()
    plain = mods in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.KeypadModifier)
    page = max(1, len(series) // 10)
    moves = {
        Qt.Key.Key_Up: view.index - 1,
        Qt.Key.Key_Down: view.index + 1,
        Qt.Key.Key_PageUp: view.index - page,
        Qt.Key.Key_PageDown: view.index + page,
        Qt.Key.Key_Home: 0,
        Qt.Key.Key_End: len(series) - 1,
    }
    actions = {
        Qt.Key.Key_R: view.reset_window,
        Qt.Key.Key_N: view.next_stored_window,
        Qt.Key.Key_I: lambda: view.set_invert(not view.inverted),
        Qt.Key.Key_O: lambda: view.set_overlays_shown(not view.overlays_shown),
        Qt.Key.Key_F: lambda: view.set_zoom(None),
        Qt.Key.Key_1: view.actual_pixels,
        Qt.Key.Key_BracketLeft: lambda: view.rotate(-90),
        Qt.Key.Key_BracketRight: lambda: view.rotate(90),
        Qt.Key.Key_H: lambda: view.flip(True),
        Qt.Key.Key_V: lambda: view.flip(False),
        Qt.Key.Key_C: lambda: view.set_cine(not view.cine_running),
        Qt.Key.Key_Plus: lambda: view.set_cine(view.cine_running, view.cine_fps * 1.25),
        Qt.Key.Key_Equal: lambda: view.set_cine(view.cine_running, view.cine_fps * 1.25),
        Qt.Key.Key_Minus: lambda: view.set_cine(view.cine_running, view.cine_fps / 1.25),
        Qt.Key.Key_Delete: view.delete_selected,
        Qt.Key.Key_Backspace: view.delete_selected,
    }

    def reset_view() -> None:
        view.reset_view()
        view.set_invert(False)  # reset_view clears the inversion; this renders the frame without it

    if key in moves and plain:
        return partial(view.set_index, moves[key])
    if key == Qt.Key.Key_R and mods == Qt.KeyboardModifier.ControlModifier:
        return reset_view
    if key == Qt.Key.Key_H and mods == Qt.KeyboardModifier.ControlModifier:
        return lambda: view.set_annotations(not view.annotations_shown)
    if key == Qt.Key.Key_Z and mods == Qt.KeyboardModifier.ControlModifier:
        return view.undo_delete
    if key in TOOL_KEYS and plain:
        return partial(view.set_tool, TOOL_KEYS[key])
    if key in PRESET_KEYS[:len(CT_PRESETS)] and plain and view.window is not None:
        return partial(view.apply_preset, list(CT_PRESETS)[PRESET_KEYS.index(key)])
    if key in actions and (plain or key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal)):
        return actions[key]
    return None
