"""Display values against pydicom's LUT functions and real encoders (DCMTK), on real files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    apply_windowing,
)
from pydicom.uid import HTJ2K, ExplicitVRLittleEndian, HTJ2KLossless, generate_uid

from app.imaging.display import Window
from tests.imaging.frames import bundled, dataset_of, encoded, info_of, series_of

GREY_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm",
              "MR_small_RLE.dcm", "JPGExtended.dcm", "image_dfl.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "MR_small_jp2klossless.dcm", "rtdose.dcm"]


def _pydicom_grey(ds: Dataset, window: Window) -> np.ndarray:
    """pydicom's windowing of its modality values onto an 8-bit display range."""
    values = apply_modality_lut(ds.pixel_array, ds)
    if values.ndim == 3:
        values = values[0]
    display = Dataset()
    display.BitsStored, display.PixelRepresentation = 8, 0
    display.PhotometricInterpretation = "MONOCHROME2"
    display.WindowCenter, display.WindowWidth = window.center, window.width
    return apply_windowing(values.astype(np.float64), display)


@pytest.mark.parametrize("name", GREY_FILES)
def test_grey_display_matches_pydicom(name: str) -> None:
    data = bundled(name)
    series = series_of(data)
    ds = dataset_of(data)
    window = series.default_window(0)
    if "WindowCenter" in ds:  # the modality's own first window is the default
        first = ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter
        assert window.center == float(first)
    expected = _pydicom_grey(ds, window)
    ours = series.render(0)
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - np.rint(expected).astype(int)).max() <= 1
    narrow = Window(window.center, max(window.width / 4, 1))  # the reader's window
    assert np.abs(series.render(0, narrow).astype(int)
                  - np.rint(_pydicom_grey(ds, narrow)).astype(int)).max() <= 1


def _ramp(rows: int = 64, cols: int = 64, bits: int = 12) -> Dataset:
    """A synthetic MONOCHROME2 ramp over the whole stored range, as a modality would send it."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in range(3))
    ds.PatientID, ds.PatientName, ds.Modality = "LUT001", "LUT^TEST", "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ramp = np.linspace(0, (1 << bits) - 1, rows * cols).astype(np.uint16).reshape(rows, cols)
    ds.PixelData = ramp.tobytes()
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _lut_item(entries: int, first: int, bits: int, table: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [entries, first, bits]
    item["LUTDescriptor"].VR = "US"
    item.LUTData = table.astype("<u2").tobytes()
    item["LUTData"].VR = "OW"
    return item


def test_modality_and_voi_lut_sequences_follow_pydicom() -> None:
    ds = _ramp()
    curve = np.sqrt(np.arange(4096) / 4095) * 65535  # a non-linear modality LUT, 16-bit output
    ds.ModalityLUTSequence = [_lut_item(4096, 0, 16, curve)]
    ds.ModalityLUTSequence[0].ModalityLUTType = "OD"
    voi = (np.arange(65536) / 65535) ** 2 * 1023  # the VOI LUT over all of it: 10-bit output
    ds.VOILUTSequence = [_lut_item(0, 0, 10, voi)]  # 0 entries means 65536
    data = encoded(ds)
    assert info_of(data).needs_header
    series = series_of(data)
    theirs = apply_modality_lut(ds.pixel_array, ds)
    assert np.allclose(series.values(0), theirs)
    expected = apply_voi_lut(theirs, ds) * (255 / 1023)
    ours = series.render(0)
    assert np.abs(ours.astype(int) - np.rint(expected).astype(int)).max() <= 1
    assert ours.min() == 0 and ours.max() == 255  # the whole grey scale is used
    # Dragging the window replaces the stored LUT with the reader's linear window.
    assert not np.array_equal(series.render(0, Window(16384, 8192)), ours)


def test_sigmoid_voi_function_follows_pydicom() -> None:
    ds = _ramp()
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 1024, "SIGMOID"
    series = series_of(encoded(ds))
    display = Dataset()
    display.BitsStored, display.PixelRepresentation = 8, 0
    display.PhotometricInterpretation = "MONOCHROME2"
    display.WindowCenter, display.WindowWidth, display.VOILUTFunction = 2048, 1024, "SIGMOID"
    expected = apply_windowing(ds.pixel_array.astype(np.float64), display)
    assert np.abs(series.render(0).astype(int) - np.rint(expected).astype(int)).max() <= 1
    linear = _ramp()
    linear.WindowCenter, linear.WindowWidth = 2048, 1024
    assert not np.array_equal(series.render(0), series_of(encoded(linear)).render(0))


def test_several_stored_windows_are_offered_in_order() -> None:
    data = bundled("examples_overlay.dcm")  # two windows, as MR scanners store them
    series = series_of(data)
    assert series.windows(0) == (Window(450, 790), Window(200, 443))
    assert series.default_window(0) == Window(450, 790)


@pytest.mark.parametrize("how", ["MONOCHROME1", "INVERSE"])
def test_inverted_grey_scales(how: str) -> None:
    plain = _ramp()
    plain.WindowCenter, plain.WindowWidth = 2048, 4096
    upright = series_of(encoded(plain)).render(0)
    flipped = _ramp()
    flipped.WindowCenter, flipped.WindowWidth = 2048, 4096
    if how == "MONOCHROME1":
        flipped.PhotometricInterpretation = "MONOCHROME1"
    else:
        flipped.PresentationLUTShape = "INVERSE"
    series = series_of(encoded(flipped))
    assert (series.render(0) == 255 - upright).all()
    assert (series.render(0, invert=True) == upright).all()  # the reader's invert undoes it


def test_palette_colour_follows_pydicom() -> None:
    data = bundled("examples_palette.dcm")  # 16-bit palette entries
    ds = dataset_of(data)
    expected = apply_color_lut(ds.pixel_array, ds).astype(np.float64) * (255 / 65535)
    ours = series_of(data).render(0)
    assert ours.shape == (*ds.pixel_array.shape, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - np.rint(expected).astype(int)).max() <= 1


def test_ybr_is_shown_in_its_true_colours() -> None:
    # The file's top rows are pure red, stored as YBR_FULL_422 (Y 76, Cb 85, Cr 255).
    ours = series_of(bundled("SC_ybr_full_422_uncompressed.dcm")).render(0)
    assert np.abs(ours[0, 0].astype(int) - [255, 0, 0]).max() <= 3


def test_multiframe_colour_jpeg_has_every_frame() -> None:
    series = series_of(bundled("examples_ybr_color.dcm"))  # 30 JPEG baseline YBR frames
    assert len(series) == 30
    first, last = series.render(0), series.render(29)
    assert first.shape == (240, 320, 3) and not np.array_equal(first, last)


def test_overlay_plane_is_drawn_where_it_lies_and_can_be_hidden() -> None:
    data = bundled("examples_overlay.dcm")
    ds = dataset_of(data)
    mask = ds.overlay_array(0x6000).astype(bool)
    row, col = (int(v) - 1 for v in ds[0x6000, 0x0050].value)
    series = series_of(data)
    shown, hidden = series.render(0), series.render(0, overlays=False)
    region = shown[row:row + mask.shape[0], col:col + mask.shape[1]]
    assert mask.any() and (region[mask] == 255).all()
    outside = np.ones(shown.shape, bool)
    outside[row:row + mask.shape[0], col:col + mask.shape[1]][mask] = False
    assert (shown[outside] == hidden[outside]).all()
    assert not (hidden[row:row + mask.shape[0], col:col + mask.shape[1]][mask] == 255).all()


def test_enhanced_multiframe_uses_each_frames_rescale_and_window() -> None:
    ds = _ramp()
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    shared, first, second = Dataset(), Dataset(), Dataset()
    shared.FrameVOILUTSequence = [Dataset()]
    shared.FrameVOILUTSequence[0].WindowCenter, shared.FrameVOILUTSequence[0].WindowWidth = 100, 200
    for item, intercept in ((first, -1000), (second, 0)):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, intercept, "US"
        item.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [first, second]
    series = series_of(encoded(ds))
    assert len(series) == 2
    assert series.values(0).min() == -1000 and series.values(1).min() == 0
    assert series.windows(1) == (Window(100, 200),)


CODECS = {  # DCMTK encoder, options, exact (lossless) or not
    "jpeg-lossless": ("dcmcjpeg", ["+e1"], True),
    "jpeg-lossless-p14": ("dcmcjpeg", ["+el"], True),
    "jpeg-extended": ("dcmcjpeg", ["+ee"], False),
    "jpeg-ls-lossless": ("dcmcjpls", ["+el"], True),
    "jpeg-ls-near-lossless": ("dcmcjpls", ["+en"], False),
    "rle": ("dcmcrle", [], True),
}


@pytest.mark.parametrize("codec", list(CODECS))
def test_images_compressed_by_dcmtk_decode_to_the_original(codec: str, tmp_path: Path) -> None:
    tool, options, exact = CODECS[codec]
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} (DCMTK) is missing: run installer/setup.sh as root")
    source = tmp_path / "in.dcm"
    source.write_bytes(encoded(_ramp(128, 128)))
    target = tmp_path / "out.dcm"
    subprocess.run([tool, *options, str(source), str(target)], check=True, capture_output=True)
    data = target.read_bytes()
    assert info_of(data).transfer_syntax != ExplicitVRLittleEndian
    original = dataset_of(source.read_bytes()).pixel_array
    decoded = series_of(data).raw(0)
    if exact:
        assert (decoded == original).all()
    else:
        assert np.abs(decoded.astype(int) - original.astype(int)).max() <= 16


@pytest.mark.parametrize("reversible", [True, False], ids=["lossless", "lossy"])
def test_htj2k_from_openjph_decodes_to_the_original(reversible: bool, tmp_path: Path) -> None:
    # HTJ2K (PS3.5 A.4.11) codestreams from OpenJPH, the reference HTJ2K codec, in a DICOM file.
    if shutil.which("ojph_compress") is None:
        pytest.fail("ojph_compress (openjph-tools) is missing: run installer/setup.sh as root")
    ds = _ramp(96, 128)
    original = np.frombuffer(ds.PixelData, "<u2").reshape(96, 128)
    raw, stream = tmp_path / "in.yuv", tmp_path / "out.j2c"
    raw.write_bytes(ds.PixelData)
    subprocess.run(["ojph_compress", "-i", str(raw), "-o", str(stream), "-dims", "{128,96}",
                    "-num_comps", "1", "-signed", "false", "-bit_depth", "12", "-downsamp", "{1,1}",
                    "-reversible", "true" if reversible else "false"], check=True, capture_output=True)
    ds.PixelData = encapsulate([stream.read_bytes()])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless if reversible else HTJ2K
    if not reversible:
        ds.LossyImageCompression = "01"
    decoded = series_of(encoded(ds)).raw(0)
    if reversible:
        assert (decoded == original).all()
    else:
        assert np.abs(decoded.astype(int) - original.astype(int)).max() <= 16
        assert not (decoded == original).all()


def test_plain_ct_takes_the_fast_path_and_needs_no_header() -> None:
    assert not info_of(bundled("CT_small.dcm")).needs_header
    assert info_of(bundled("examples_palette.dcm")).needs_header
    assert info_of(bundled("examples_overlay.dcm")).needs_header
