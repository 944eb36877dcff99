"""The pixel path against pydicom's own decoding and LUT functions, on pydicom's test files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut
from pydicom.uid import MPEG4HP41, ParametricMapStorage

from app.errors import CustodianError
from app.imaging.display import Window, apply_window, modality_values
from app.imaging.pixels import FrameInfo, decode_frames
from app.imaging.series import SeriesImages
from tests.imaging.frames import encoded, info_of

# Files bundled with pydicom (others would be downloaded, which this machine cannot do).
FILES = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "MR_small_implicit.dcm",
         "MR_small_bigendian.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm",
         "SC_rgb_rle.dcm", "rtdose_rle.dcm", "SC_rgb_small_odd.dcm", "GDCMJ2K_TextGBR.dcm",
         "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm",
         "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "image_dfl.dcm",
         "examples_ybr_color.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
         "SC_rgb_small_odd_big_endian.dcm", "SC_rgb_rle_16bit_2frame.dcm"]


@pytest.mark.parametrize("name", FILES)
def test_decoding_matches_pydicom(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    info = info_of(data)
    ours = decode_frames(info, data).frames
    theirs = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert ours.reshape(theirs.shape).tolist() == theirs.tolist()


def test_fast_path_is_taken_for_native_little_endian() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert info_of(data).pixel_offset is not None
    big = Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()
    assert info_of(big).pixel_offset is None


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
    assert decode_frames(info_of(data), data).frames[0].tolist() == theirs.tolist()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"])
def test_modality_rescale_matches_pydicom(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    data = Path(get_testdata_file(name)).read_bytes()
    info = info_of(data)
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


def test_a_file_no_decoder_reads_gives_a_plain_error() -> None:
    data = Path(get_testdata_file("JPEG-lossy.dcm")).read_bytes()  # a misplaced marker segment
    with pytest.raises(CustodianError, match="could not be decoded"):
        decode_frames(info_of(data), data)


def test_undecodable_pixels_give_a_plain_error() -> None:
    data = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    info = info_of(data)
    start = data.index(b"\xff\x4f\xff\x51")  # J2K codestream start marker
    broken = data[:start + 2] + bytes(200) + data[start + 202:]
    with pytest.raises(CustodianError, match="could not be decoded"):
        decode_frames(info, broken)


def test_window_width_is_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Window(0, 0.5)


def test_instances_imported_before_the_header_flag_read_their_header() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    info = info_of(data)
    row = (info.sop_uid, info.study_uid, "", "", info.transfer_syntax, info.rows, info.columns,
           info.frames, info.samples, info.bits_allocated, info.bits_stored,
           info.pixel_representation, info.photometric, info.rescale_slope, info.rescale_intercept,
           info.window_center, info.window_width, None, None, None, info.pixel_offset, None, None)
    older = FrameInfo.from_row(row)
    assert older.needs_header and not FrameInfo.from_row((*row[:-1], 0)).needs_header
    assert (decode_frames(older, data).frames == decode_frames(info, data).frames).all()


def palette_without(*keywords: str) -> bytes:
    """pydicom's uncompressed palette-colour ultrasound, with Image Pixel attributes left out as
    older devices leave them out (the standard implies their values)."""
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    for keyword in keywords:
        delattr(ds, keyword)
    return encoded(ds)


@pytest.mark.parametrize("missing", [("PixelRepresentation",), ("BitsStored",), ("SamplesPerPixel",),
                                     ("PixelRepresentation", "BitsStored", "SamplesPerPixel")])
def test_uncompressed_palette_colour_without_implied_attributes_decodes(missing: tuple[str, ...]) -> None:
    data = palette_without(*missing)
    series = SeriesImages([info_of(data)], lambda info: decode_frames(info, data))
    whole = Path(get_testdata_file("examples_palette.dcm")).read_bytes()
    reference = SeriesImages([info_of(whole)], lambda info: decode_frames(info, whole))

    assert (series.raw(0) == pydicom.dcmread(io.BytesIO(whole)).pixel_array).all()
    assert series.is_colour(0) and (series.render(0) == reference.render(0)).all()


def float_parametric_map(double: bool = False) -> tuple[bytes, np.ndarray]:
    """A one-frame Parametric Map of float (or double) values, e.g. an ADC map in mm²/s × 1000."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    values = (ds.pixel_array.astype(np.float64) / 700.0).astype(np.float64 if double else np.float32)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ParametricMapStorage
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
                    "RescaleIntercept", "WindowCenter", "WindowWidth", "SmallestImagePixelValue",
                    "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsAllocated, ds.NumberOfFrames = (64 if double else 32), 1
    if double:
        ds.DoubleFloatPixelData = values.tobytes()
    else:
        ds.FloatPixelData = values.tobytes()
    return encoded(ds), values


@pytest.mark.parametrize("double", [False, True])
def test_float_pixel_data_is_indexed_and_decoded(double: bool) -> None:
    data, values = float_parametric_map(double)
    info = info_of(data)
    assert (info.rows, info.columns, info.frames) == (*values.shape, 1)
    assert info.needs_header and info.pixel_offset is None, "float values are read through pydicom"
    series = SeriesImages([info], lambda i: decode_frames(i, data))
    assert np.allclose(series.values(0), values, rtol=1e-6)
    window = series.default_window(0)
    assert window.center == pytest.approx((values.min() + values.max()) / 2, rel=1e-5)
    shown = series.render(0)
    assert shown.min() == 0 and shown.max() == 255


def test_each_decoding_failure_says_what_is_wrong() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.BitsAllocated = 12  # no native encoding packs 12 bits: the data does not fit its header
    odd = encoded(ds)
    with pytest.raises(CustodianError, match="its pixel data does not match what its header describes"):
        decode_frames(info_of(odd), odd)
    video = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    video.file_meta.TransferSyntaxUID = MPEG4HP41
    video.PixelData = encapsulate([b"\x00\x00\x00\x01\x67" + bytes(64)])
    video["PixelData"].VR = "OB"
    data = encoded(video)
    with pytest.raises(CustodianError, match=r"no decoder on this workstation reads its compression "
                                             r"\(MPEG-4 AVC/H.264 High Profile / Level 4.1\)"):
        decode_frames(info_of(data), data)
    lossy = Path(get_testdata_file("JPEG-lossy.dcm")).read_bytes()
    with pytest.raises(CustodianError, match=r"its compressed pixel data \(JPEG Extended .*\) is damaged"):
        decode_frames(info_of(lossy), lossy)


def test_slice_thickness_is_read_on_demand_on_the_fast_path() -> None:
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    fast = decode_frames(info_of(ct), ct)
    assert fast.thickness is None and fast.header, "the fast path parses no header while decoding"
    assert fast.slice_thickness == float(pydicom.dcmread(io.BytesIO(ct)).SliceThickness)
    big = Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()
    parsed = decode_frames(info_of(big), big)  # through pydicom: read while decoding
    stated = float(pydicom.dcmread(io.BytesIO(big)).SliceThickness)
    assert parsed.thickness == parsed.slice_thickness == stated
    ds = pydicom.dcmread(io.BytesIO(ct))
    del ds.SliceThickness
    unsaid = encoded(ds)
    assert decode_frames(info_of(unsaid), unsaid).slice_thickness is None
