"""Reading a received presentation state (made here with pydicom as another viewer would write one),
and a viewport's rotation and flips turned into a state's and back."""

from __future__ import annotations

import math
import time
from io import BytesIO
from itertools import product

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.sequence import Sequence

from app.errors import CustodianError
from app.imaging.display import Window
from app.imaging.displayed_area import MAGNIFY, SCALE_TO_FIT, DisplayedArea
from app.imaging.gsps import Graphic, Note, Voi, polyline, read, state_turn, view_turn
from app.imaging.presentation import Presentation
from app.imaging.voi_table import TableWindow

SERIES, FIRST, SECOND = "1.2.3.1", "1.2.3.1.1", "1.2.3.1.2"


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _received() -> Dataset:
    ds = _item(SOPInstanceUID="1.2.3.9", ContentLabel="PRIOR", ContentCreatorName="Smith^Ann",
               PresentationCreationDate="20260102", PresentationCreationTime="134501",
               ImageRotation=270, ImageHorizontalFlip="Y", PresentationLUTShape="INVERSE")
    refs = [_item(ReferencedSOPInstanceUID=uid) for uid in (FIRST, SECOND)]
    ds.ReferencedSeriesSequence = Sequence([_item(SeriesInstanceUID=SERIES, ReferencedImageSequence=refs)])
    lut = _item(LUTDescriptor=[4, 100, 12], LUTData=np.array([0, 1000, 3000, 4095], "<u2").tobytes())
    ds.SoftcopyVOILUTSequence = Sequence([
        _item(ReferencedImageSequence=[_item(ReferencedSOPInstanceUID=FIRST)], WindowCenter="40",
              WindowWidth="400"),
        _item(ReferencedImageSequence=[_item(ReferencedSOPInstanceUID=SECOND)], VOILUTSequence=[lut])])
    circle = _item(GraphicAnnotationUnits="PIXEL", GraphicType="CIRCLE", NumberOfGraphicPoints=2,
                   GraphicData=[10.5, 10.5, 13.5, 14.5], GraphicFilled="N")
    on_screen = _item(GraphicAnnotationUnits="DISPLAY", GraphicType="POINT", NumberOfGraphicPoints=1,
                      GraphicData=[0.5, 0.5])
    note = _item(UnformattedTextValue="see prior", BoundingBoxAnnotationUnits="PIXEL",
                 BoundingBoxTopLeftHandCorner=[2.5, 3.5], BoundingBoxBottomRightHandCorner=[20.5, 8.5])
    ds.GraphicAnnotationSequence = Sequence([_item(
        GraphicLayer="L", ReferencedImageSequence=[_item(ReferencedSOPInstanceUID=SECOND)],
        GraphicObjectSequence=[circle, on_screen], TextObjectSequence=[note])])
    ds.DisplayedAreaSelectionSequence = Sequence([_item(
        ReferencedImageSequence=[_item(ReferencedSOPInstanceUID=SECOND)],
        DisplayedAreaTopLeftHandCorner=[10, 5], DisplayedAreaBottomRightHandCorner=[25, 20],
        PresentationSizeMode="MAGNIFY", PresentationPixelMagnificationRatio=2.5)])
    return ds


def test_a_received_state_is_read_as_what_a_viewport_applies() -> None:
    state = read(_received())
    assert (state.summary.label, state.summary.creator, state.summary.created) == ("PRIOR", "Smith^Ann",
                                                                                   "2026-01-02 13:45")
    assert state.references(SERIES) and not state.references("1.2.3.2")
    assert (state.rotation, state.flip, state.inverse) == (270, True, True)
    first, second = state.voi_for(FIRST), state.voi_for(SECOND)
    assert first == Voi((FIRST,), Window(40, 400))
    assert second is not None and second.lut is not None
    assert second.lut.table.tolist() == [0, 1000, 3000, 4095]
    table = second.as_window()
    assert isinstance(table, TableWindow) and table.entries == (0, 1000, 3000, 4095)
    assert (table.center, table.width) == (102, 4)  # the LUT's input range, 100 to 103
    assert state.area_for(FIRST) is None
    (area,) = state.areas
    assert (area.sop_uids, area.box, area.mode, area.magnification) == ((SECOND,), (9.0, 4.0, 24.0, 19.0),
                                                                       MAGNIFY, 2.5)
    assert state.drawn_on(FIRST, 0) == []
    (drawn,) = state.drawn_on(SECOND, 0)
    assert drawn.graphics == (Graphic("CIRCLE", ((10.0, 10.0), (13.0, 14.0))),)  # the DISPLAY point left out
    assert drawn.notes == (Note("see prior", None, (2.0, 3.0, 20.0, 8.0)),)
    assert all(math.isclose(math.dist(p, (10.0, 10.0)), 5.0) for p in polyline(drawn.graphics[0]))


def test_a_received_state_of_300_000_points_is_refused_before_any_is_converted() -> None:
    ds = _received()
    huge = _item(GraphicAnnotationUnits="PIXEL", GraphicType="POLYLINE", GraphicData=[0.5] * 600_000)
    ds.GraphicAnnotationSequence[0].GraphicObjectSequence.append(huge)
    written = BytesIO()
    dcmwrite(written, ds, implicit_vr=False, little_endian=True)
    started = time.monotonic()
    with pytest.raises(CustodianError, match="holds more graphics"):
        read(dcmread(BytesIO(written.getvalue()), force=True))
    assert time.monotonic() - started < 0.5  # (read unbounded, a million points took 15 s and 700 MB)
    del ds.GraphicAnnotationSequence[0].GraphicObjectSequence[-1]
    written = BytesIO()
    dcmwrite(written, ds, implicit_vr=False, little_endian=True)
    assert read(dcmread(BytesIO(written.getvalue()), force=True)).drawn_on(SECOND, 0)


def _matrix(degrees: int, flip_h: bool = False, flip_v: bool = False, *, flip_first: bool) -> np.ndarray:
    """Screen coordinates (y down): a clockwise turn, and mirrorings before or after it."""
    c, s = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    turn, mirror = np.array([[c, -s], [s, c]]), np.diag([-1 if flip_h else 1, -1 if flip_v else 1])
    return turn @ mirror if flip_first else mirror @ turn


@pytest.mark.parametrize(("rotation", "flip_h", "flip_v"),
                         list(product((0, 90, 180, 270), (False, True), (False, True))))
def test_a_views_turn_is_saved_and_applied_as_the_same_picture(rotation: int, flip_h: bool,
                                                               flip_v: bool) -> None:
    shown = _matrix(rotation, flip_h, flip_v, flip_first=False)  # the view flips after turning
    saved, flip = view_turn(rotation, flip_h, flip_v)
    assert (_matrix(saved, flip, flip_first=True) == shown).all()  # a state flips first (PS3.3 C.10.6)
    state = read(_item(SOPInstanceUID="1.2", ImageRotation=saved, ImageHorizontalFlip="Y" if flip else "N"))
    again, mirrored = state_turn(state)
    assert (_matrix(again, mirrored, flip_first=False) == shown).all()


def test_a_voi_lut_gives_the_grey_levels_of_its_table_as_pydicom_maps_them() -> None:
    """A step LUT (no linear window gives it): below its inputs the first entry, above the last."""
    table = [0] * 8 + [3000] * 8 + [4095] * 16  # 12-bit entries for inputs -10 to 21
    values = np.arange(-40, 60, dtype=np.float32).reshape(10, 10)
    item = _item(BitsStored=16, PixelRepresentation=1, PhotometricInterpretation="MONOCHROME2")
    item.VOILUTSequence = Sequence([_item(LUTDescriptor=[len(table), -10, 12], LUTData=table)])
    expected = np.rint(apply_voi_lut(values.astype(np.int16), item) * (255 / 4095)).astype(np.uint8)
    window = TableWindow.of(-10, 12, table)
    shown = Presentation("MONOCHROME2").grey(values, window)
    assert (shown == expected).all() and sorted(set(shown.ravel().tolist())) == [0, 187, 255]
    assert (shown.ravel()[29:31].tolist(), shown.ravel()[37:39].tolist()) == ([0, 0], [0, 187])  # -11 .. -2
    assert (Presentation("MONOCHROME2").grey(values, window, invert=True) == 255 - expected).all()


@pytest.mark.parametrize(("mode", "rotation", "zoom"), [(SCALE_TO_FIT, 0, 10.0), (SCALE_TO_FIT, 90, 15.0),
                                                        (MAGNIFY, 0, 3.0)])
def test_a_displayed_area_is_zoomed_to_fill_the_viewport_or_magnified(mode: str, rotation: int,
                                                                      zoom: float) -> None:
    area = DisplayedArea((), (10.0, 20.0, 49.0, 39.0), mode, 3.0)  # 40 columns by 20 rows
    assert area.zoom(1.0, rotation, 400, 600) == zoom and area.centre == (29.5, 29.5)
    assert DisplayedArea((), (0.0, 0.0, 63.0, 31.0)).whole(32, 64) and not area.whole(64, 64)
