"""The pixel path against pydicom's own decoding and LUT functions, on pydicom's test files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from app.errors import CustodianError
from app.imaging.display import Window, apply_window, modality_values
from app.imaging.pixels import FrameInfo, decode_frames
from app.store.ingest import parse

# Files bundled with pydicom (others would be downloaded, which this machine cannot do).
FILES = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "MR_small_implicit.dcm",
         "MR_small_bigendian.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm",
         "SC_rgb_rle.dcm", "rtdose_rle.dcm", "SC_rgb_small_odd.dcm", "GDCMJ2K_TextGBR.dcm"]


def _info(data: bytes) -> FrameInfo:
    p = parse(data)
    return FrameInfo(p.sop_uid, p.study_uid, "", "", p.transfer_syntax, p.rows, p.columns, p.frames,
                     p.samples, p.bits_allocated, p.bits_stored, p.pixel_representation,
                     p.photometric, p.rescale_slope, p.rescale_intercept, p.window_center,
                     p.window_width, None, None, None, p.pixel_offset, None)


@pytest.mark.parametrize("name", FILES)
def test_decoding_matches_pydicom(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    info = _info(data)
    ours = decode_frames(info, data)
    theirs = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert ours.reshape(theirs.shape).tolist() == theirs.tolist()


def test_fast_path_is_taken_for_native_little_endian() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert _info(data).pixel_offset is not None
    big = Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()
    assert _info(big).pixel_offset is None


def test_bits_stored_below_allocated_is_masked() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    arr = ds.pixel_array.astype(np.int16)
    ds.BitsStored, ds.HighBit = 12, 11
    raw = (arr & 0x0FFF).astype(np.uint16) | 0xF000 * (arr >= 0)  # junk in the unused high bits
    ds.PixelData = raw.astype(np.uint16).tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    data = out.getvalue()
    theirs = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert decode_frames(_info(data), data)[0].tolist() == theirs.tolist()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"])
def test_modality_rescale_matches_pydicom(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    data = Path(get_testdata_file(name)).read_bytes()
    info = _info(data)
    arr = ds.pixel_array
    expected = apply_modality_lut(arr, ds)
    ours = modality_values(arr, info.slope, info.intercept)
    assert np.allclose(ours, expected, rtol=1e-5, atol=1e-3)


def test_window_follows_the_dicom_linear_function() -> None:
    values = np.arange(-200, 201, dtype=np.float32)
    c, w = 40.0, 400.0
    out = apply_window(values, Window(c, w))
    low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    for x, y in zip(values, out, strict=True):
        if x <= low:
            assert y == 0
        elif x > high:
            assert y == 255
        else:
            assert abs(y - ((x - (c - 0.5)) / (w - 1) + 0.5) * 255) <= 0.5
    assert (apply_window(values, Window(c, w), invert=True) == 255 - out).all()


def test_undecodable_pixels_give_a_plain_error() -> None:
    data = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    info = _info(data)
    start = data.index(b"\xff\x4f\xff\x51")  # J2K codestream start marker
    broken = data[:start + 2] + bytes(200) + data[start + 202:]
    with pytest.raises(CustodianError, match="could not be decoded"):
        decode_frames(info, broken)


def test_window_width_is_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Window(0, 0.5)
