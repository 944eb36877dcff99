"""Grayscale Softcopy Presentation States: a reader's measurements, notes, window and rotation as the
DICOM object other viewers and the PACS understand, and a received one read back to apply.

Points here are image coordinates as in :mod:`app.imaging.measure` (pixel centres at whole numbers);
a presentation state's PIXEL units put the top left corner of the first pixel at 0.0 (PS3.3
C.10.5), half a pixel away, and list column before row. Building uses highdicom (imported only
when a state is written: it is slow to import); reading needs only pydicom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.displayed_area import DisplayedArea, read_areas
from app.imaging.measure import Kind, Measurement, Point
from app.imaging.voi_table import TableWindow

if TYPE_CHECKING:
    from highdicom.pr import GraphicAnnotation, GraphicLayer

GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
LAYER = "CUSTODIAN"
SERIES_NUMBER = 9901  # the series a saved state goes in (each save is a series of its own)
_SHIFT = 0.5  # image coordinates to PIXEL units
_ROTATIONS = (0, 90, 180, 270)
OUTLINE_STEPS = 48  # segments a circle or ellipse is drawn with
# Bytes of graphic points, LUT entries and text one state may hold (a reader's states hold a few KB):
# a received state is read each time its patient's series is opened, and each point costs Python
# objects, so a hostile one of millions of points is refused before any of them is converted.
MAX_CONTENT_BYTES = 2 * 1024 * 1024
_BOUNDED = ("GraphicData", "LUTData", "UnformattedTextValue")
TOO_LARGE = ("This presentation state holds more graphics, text or table entries than Custodian applies "
             f"({MAX_CONTENT_BYTES // (1024 * 1024)} MB); it is not shown.")


@dataclass(frozen=True)
class Graphic:
    shape: str  # POLYLINE, INTERPOLATED, CIRCLE, ELLIPSE or POINT (PS3.3 C.10.5.1.2)
    points: tuple[Point, ...]  # image coordinates
    filled: bool = False


@dataclass(frozen=True)
class Note:
    """A text object: at an anchor point (drawn with a line to it), in a box, or both."""

    text: str
    anchor: Point | None = None
    box: tuple[float, float, float, float] | None = None  # left, top, right, bottom (image coordinates)


@dataclass(frozen=True)
class Annotation:
    """What a state draws on one image (on some frames of a multi-frame one)."""

    sop_uid: str
    frames: tuple[int, ...]  # 0-based frames it is drawn on; () on every frame
    graphics: tuple[Graphic, ...] = ()
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class VoiLut:
    first: int  # the first input value mapped
    bits: int  # bits of the output entries
    table: np.ndarray


@dataclass(frozen=True)
class Voi:
    """A Softcopy VOI LUT item: a window or a LUT, for some images (() for all the state's)."""

    sop_uids: tuple[str, ...]
    window: Window | None = None
    lut: VoiLut | None = None

    def as_window(self) -> Window | None:
        """What a viewport is given: the window, or the LUT as a :class:`TableWindow`, which shows the
        table's own grey levels (a state with both is drawn through its LUT)."""
        if self.lut is None:
            return self.window
        return TableWindow.of(self.lut.first, self.lut.bits, self.lut.table)


@dataclass(frozen=True)
class StateSummary:
    """One presentation state as a chooser lists it."""

    sop_uid: str
    label: str
    description: str
    creator: str
    created: str  # "YYYY-MM-DD HH:MM", or "" when the state does not say


@dataclass(frozen=True)
class PresentationState:
    summary: StateSummary
    images: tuple[tuple[str, str], ...]  # (series UID, SOP Instance UID) of the images it applies to
    vois: tuple[Voi, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    rotation: int = 0  # clockwise degrees, applied after the flip (PS3.3 C.10.6)
    flip: bool = False  # mirrored left to right
    areas: tuple[DisplayedArea, ...] = ()  # Displayed Area Selection
    inverse: bool = False  # Presentation LUT Shape INVERSE

    def references(self, series_uid: str) -> bool:
        return any(series == series_uid for series, _ in self.images)

    def voi_for(self, sop_uid: str) -> Voi | None:
        return next((v for v in self.vois if not v.sop_uids or sop_uid in v.sop_uids), None)

    def area_for(self, sop_uid: str) -> DisplayedArea | None:
        return next((a for a in self.areas if not a.sop_uids or sop_uid in a.sop_uids), None)

    def drawn_on(self, sop_uid: str, frame: int) -> list[Annotation]:
        return [a for a in self.annotations if a.sop_uid == sop_uid and (not a.frames or frame in a.frames)]


@dataclass(frozen=True)
class Labelled:
    """A measurement with the words a reader sees beside it (its value, or a note's text)."""

    measurement: Measurement
    text: str


# ---------------------------------------------------------------------------- writing
def _pixel(point: Point, columns: int, rows: int) -> tuple[float, float]:
    """Image coordinates to PIXEL units, kept on the image (a state may not point outside it)."""
    return (min(max(point[0] + _SHIFT, 0.0), float(columns)), min(max(point[1] + _SHIFT, 0.0), float(rows)))


def _shapes(m: Measurement) -> list[tuple[str, list[Point]]]:
    """The graphic objects a measurement is drawn as."""
    points = list(m.points)
    if m.kind is Kind.COBB:
        return [("POLYLINE", points[:2]), ("POLYLINE", points[2:])]
    if m.kind is Kind.RECTANGLE:
        (x0, y0), (x1, y1) = points
        return [("POLYLINE", [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])]
    if m.kind is Kind.FREEHAND:
        return [("POLYLINE", [*points, points[0]])]
    if m.kind is Kind.ELLIPSE:
        (x0, y0), (x1, y1) = points
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        across, down = [(x0, cy), (x1, cy)], [(cx, y0), (cx, y1)]
        return [("ELLIPSE", across + down if abs(x1 - x0) >= abs(y1 - y0) else down + across)]
    if m.kind is Kind.TEXT:
        return []
    return [("POLYLINE", points)]


def _anchor(m: Measurement) -> Point:
    """Where a measurement's words are tied to: a note's point, an arrow's tail, else the last point."""
    return m.points[0] if m.kind in (Kind.TEXT, Kind.ARROW) else m.points[-1]


def build(images: Sequence[Dataset], labelled: Sequence[Labelled], window: Window | None, *,
          rotation: int, flip: bool, sop_uid: str, series_uid: str, creator: str,
          software: str) -> Dataset:
    """A GSPS for ``images`` (headers of one series, without pixels needed): the measurements as
    graphic and text annotations, ``window`` as the Softcopy VOI LUT, the rotation and flip."""
    from highdicom.pr import (
        GrayscaleSoftcopyPresentationState,
        SoftcopyVOILUTTransformation,
    )

    annotations = _annotations(images, labelled)
    voi = [SoftcopyVOILUTTransformation(window_center=window.center, window_width=window.width,
                                        window_explanation="Reader's window")] if window else None
    state = GrayscaleSoftcopyPresentationState(
        referenced_images=list(images), series_instance_uid=series_uid, series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer="Custodian",
        manufacturer_model_name="Custodian", software_versions=software, device_serial_number="0",
        content_label=LAYER, content_description="Measurements, notes and window of a reading",
        graphic_annotations=annotations or None, graphic_layers=_layers() if annotations else None,
        voi_lut_transformations=voi,
        content_creator_name=creator if "^" in creator else f"{creator}^")  # (a name of one part)
    for keyword in ("BodyPartExamined", "Laterality"):  # (whether laterality is due depends on the part)
        if images[0].get(keyword):
            setattr(state, keyword, images[0].get(keyword))
    if rotation % 360 or flip:
        state.ImageRotation = rotation % 360
        state.ImageHorizontalFlip = "Y" if flip else "N"
    return state


def _layers() -> list[GraphicLayer]:
    from highdicom.pr import GraphicLayer as Layer

    return [Layer(LAYER, order=1, description="A reader's measurements and notes")]


def _annotations(images: Sequence[Dataset], labelled: Sequence[Labelled]) -> list[GraphicAnnotation]:
    from highdicom.pr import GraphicAnnotation as Annotated
    from highdicom.pr import GraphicObject, TextObject

    by_image: dict[tuple[str, int], list[Labelled]] = {}
    for item in labelled:
        by_image.setdefault((item.measurement.sop_uid, item.measurement.frame), []).append(item)
    headers = {str(ds.SOPInstanceUID): ds for ds in images}
    layer = _layers()[0]
    found = []
    for (sop_uid, frame), items in by_image.items():
        ds = headers.get(sop_uid)
        if ds is None:
            continue  # (a measurement on an image not in the series: not this state's)
        columns, rows = int(ds.Columns), int(ds.Rows)
        graphics, texts = [], []
        for item in items:
            for shape, points in _shapes(item.measurement):
                data = np.array([_pixel(p, columns, rows) for p in points], dtype=np.float64)
                graphics.append(GraphicObject(shape, data, "PIXEL"))
            if item.text:
                texts.append(TextObject(item.text[:1024], "PIXEL",
                                        anchor_point=_pixel(_anchor(item.measurement), columns, rows)))
        multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
        found.append(Annotated([ds], layer, referenced_frame_number=frame + 1 if multi else None,
                                       graphic_objects=graphics or None, text_objects=texts or None))
    return found


# ---------------------------------------------------------------------------- reading
def _image(values: Sequence[float]) -> Point:
    return float(values[0]) - _SHIFT, float(values[1]) - _SHIFT


def _points(values: Sequence[float]) -> tuple[Point, ...]:
    flat = [float(v) for v in values]
    return tuple(_image(flat[i:i + 2]) for i in range(0, len(flat) - 1, 2))


def _pixel_units(item: Dataset, keyword: str) -> bool:
    """Only PIXEL units are placed on the image; DISPLAY ones belong to a screen layout."""
    return str(item.get(keyword, "PIXEL")).strip().upper() != "DISPLAY"


def _graphics(item: Dataset) -> tuple[Graphic, ...]:
    return tuple(Graphic(str(g.get("GraphicType", "POLYLINE")).strip().upper(), _points(g.GraphicData),
                         str(g.get("GraphicFilled", "N")).strip().upper() == "Y")
                 for g in item.get("GraphicObjectSequence") or []
                 if "GraphicData" in g and _pixel_units(g, "GraphicAnnotationUnits"))


def _notes(item: Dataset) -> tuple[Note, ...]:
    notes = []
    for t in item.get("TextObjectSequence") or []:
        placed = "AnchorPoint" in t and _pixel_units(t, "AnchorPointAnnotationUnits")
        anchor = _image(t.AnchorPoint) if placed else None
        box = None
        if "BoundingBoxTopLeftHandCorner" in t and _pixel_units(t, "BoundingBoxAnnotationUnits"):
            left, top = _image(t.BoundingBoxTopLeftHandCorner)
            right, bottom = _image(t.BoundingBoxBottomRightHandCorner)
            box = (left, top, right, bottom)
        if anchor is not None or box is not None:
            notes.append(Note(str(t.get("UnformattedTextValue", "")), anchor, box))
    return tuple(notes)


def _referenced(item: Dataset) -> list[tuple[str, tuple[int, ...]]]:
    """(SOP Instance UID, 0-based frames) of an item's Referenced Image Sequence."""
    found = []
    for ref in item.get("ReferencedImageSequence") or []:
        frames = ref.get("ReferencedFrameNumber")
        found.append((str(ref.ReferencedSOPInstanceUID), tuple(int(n) - 1 for n in _values(frames))))
    return found


def _values(value: Any) -> list[Any]:
    """An element's values as a list (pydicom gives one value bare, several as a MultiValue)."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else [value]


def _vois(ds: Dataset, every: tuple[str, ...]) -> tuple[Voi, ...]:
    vois = []
    for item in ds.get("SoftcopyVOILUTSequence") or []:
        uids = tuple(uid for uid, _ in _referenced(item)) if "ReferencedImageSequence" in item else ()
        window = None
        if "WindowWidth" in item and "WindowCenter" in item:
            width, center = float(_values(item.WindowWidth)[0]), float(_values(item.WindowCenter)[0])
            window = Window(center, width) if width >= 1 else None
        lut = None
        if item.get("VOILUTSequence"):
            lut_item = item.VOILUTSequence[0]
            entries, first, bits = (int(v) for v in lut_item.LUTDescriptor)
            count, data = entries or 65536, lut_item.LUTData
            if isinstance(data, bytes):  # OW: a word an entry, or 8-bit entries two to a word
                table = np.frombuffer(data, "<u2" if len(data) >= 2 * count else np.uint8)
            else:
                table = np.asarray(_values(data), np.uint16)
            lut = VoiLut(first, bits, table[:count].astype(np.uint16))
        if window is not None or lut is not None:
            vois.append(Voi(uids if set(uids) != set(every) else (), window, lut))
    return tuple(vois)


def _created(ds: Dataset) -> str:
    date, time = str(ds.get("PresentationCreationDate", "")), str(ds.get("PresentationCreationTime", ""))
    if len(date) != 8:
        return ""
    when = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    return f"{when} {time[:2]}:{time[2:4]}" if len(time) >= 4 else when


def summary(ds: Dataset) -> StateSummary:
    return StateSummary(str(ds.SOPInstanceUID), str(ds.get("ContentLabel", "")),
                        str(ds.get("ContentDescription", "") or ""),
                        str(ds.get("ContentCreatorName", "") or "").strip("^"), _created(ds))


def _content_bytes(ds: Dataset) -> int:
    """The bytes of the bounded elements of a state's annotations and VOI LUTs, as they were read
    (an element's values are converted only when asked for, so this converts none of them)."""
    items = [*(ds.get("GraphicAnnotationSequence") or []), *(ds.get("SoftcopyVOILUTSequence") or [])]
    items += [inner for item in items for keyword in ("GraphicObjectSequence", "TextObjectSequence",
                                                      "VOILUTSequence") for inner in item.get(keyword) or []]
    return sum(_stated(item.get_item(keyword)) for item in items for keyword in _BOUNDED)


def _stated(elem: DataElement | RawDataElement | Dataset | None) -> int:
    if isinstance(elem, RawDataElement):
        return elem.length
    if isinstance(elem, DataElement):  # (already converted: a state built in memory)
        return len(elem.value) if isinstance(elem.value, bytes | str) else 4 * max(elem.VM, 1)
    return 0


def read(ds: Dataset) -> PresentationState:
    """A received (or saved) presentation state as what a viewport applies; one over
    ``MAX_CONTENT_BYTES`` is refused (:data:`TOO_LARGE`)."""
    if _content_bytes(ds) > MAX_CONTENT_BYTES:
        raise CustodianError(TOO_LARGE)
    images = tuple((str(series.SeriesInstanceUID), str(ref.ReferencedSOPInstanceUID))
                   for series in ds.get("ReferencedSeriesSequence") or []
                   for ref in series.get("ReferencedImageSequence") or [])
    every = tuple(uid for _, uid in images)
    annotations = []
    for item in ds.get("GraphicAnnotationSequence") or []:
        graphics, notes = _graphics(item), _notes(item)
        targets = _referenced(item) if "ReferencedImageSequence" in item else [(u, ()) for u in every]
        for uid, frames in targets:
            annotations.append(Annotation(uid, frames, graphics, notes))
    rotation = int(ds.get("ImageRotation", 0) or 0)
    return PresentationState(
        summary(ds), images, _vois(ds, every), tuple(annotations),
        rotation if rotation in _ROTATIONS else 0, str(ds.get("ImageHorizontalFlip", "N")).strip() == "Y",
        read_areas(ds, every), str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE")


def view_turn(rotation: int, flip_h: bool, flip_v: bool) -> tuple[int, bool]:
    """A view's rotation (clockwise, applied first) and flips (after it) as a state's rotation and
    horizontal flip (the flip first, then the rotation): a vertical flip is a horizontal one half
    a turn round, and rotating after a flip turns the other way."""
    flip = flip_h != flip_v
    turned = (rotation + (180 if flip_v else 0)) % 360
    return ((-turned) % 360 if flip else turned), flip


def state_turn(state: PresentationState) -> tuple[int, bool]:
    """The view rotation (clockwise, applied before a horizontal flip) that shows ``state``'s."""
    return ((-state.rotation) % 360 if state.flip else state.rotation), state.flip


def polyline(graphic: Graphic) -> list[Point]:
    """The points a graphic object is drawn through: a circle or ellipse (of any tilt) as its
    outline, a point as itself, a polyline or interpolated curve through its points."""
    points = graphic.points
    if graphic.shape == "CIRCLE" and len(points) == 2:
        (cx, cy), (ex, ey) = points
        radius = math.hypot(ex - cx, ey - cy)
        return [(cx + radius * math.cos(t), cy + radius * math.sin(t)) for t in _turn()]
    if graphic.shape == "ELLIPSE" and len(points) == 4:
        (ax, ay), (bx, by), (c0x, c0y), (c1x, c1y) = points
        cx, cy = (ax + bx) / 2, (ay + by) / 2
        major, minor = math.hypot(bx - ax, by - ay) / 2, math.hypot(c1x - c0x, c1y - c0y) / 2
        tilt = math.atan2(by - ay, bx - ax)
        return [(cx + major * math.cos(t) * math.cos(tilt) - minor * math.sin(t) * math.sin(tilt),
                 cy + major * math.cos(t) * math.sin(tilt) + minor * math.sin(t) * math.cos(tilt))
                for t in _turn()]
    return list(points)


def _turn() -> list[float]:
    return [2 * math.pi * i / OUTLINE_STEPS for i in range(OUTLINE_STEPS + 1)]
