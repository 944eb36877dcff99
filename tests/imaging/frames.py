"""Instances as the viewer gets them, without a vault: parsed by the importer, decoded by the core."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from app.imaging.pixels import FrameInfo, decode_frames
from app.imaging.series import SeriesImages
from app.store.ingest import parse


def bundled(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def encoded(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def info_of(data: bytes) -> FrameInfo:
    p = parse(data)
    return FrameInfo(p.sop_uid, p.study_uid, "", "", p.transfer_syntax, p.rows, p.columns, p.frames,
                     p.samples, p.bits_allocated, p.bits_stored, p.pixel_representation,
                     p.photometric, p.rescale_slope, p.rescale_intercept, p.window_center,
                     p.window_width, *(tuple(json.loads(v)) if v else None
                                       for v in (p.pixel_spacing, p.position, p.orientation)),
                     p.pixel_offset, p.instance_number, bool(p.needs_header))


def series_of(data: bytes) -> SeriesImages:
    return SeriesImages([info_of(data)], lambda info: decode_frames(info, data))


def dataset_of(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))
