"""Instances as the viewer gets them, without a vault: parsed by the importer, decoded by the core."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

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
                     p.pixel_offset, p.instance_number, bool(p.needs_header),
                     tuple(map(tuple, json.loads(p.frame_positions))) if p.frame_positions else None)


def series_of(data: bytes) -> SeriesImages:
    return SeriesImages([info_of(data)], lambda info: decode_frames(info, data))


def dataset_of(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def enhanced_from(slices: list[Dataset], order: list[int]) -> Dataset:
    """The single-frame ``slices`` as one Enhanced CT Image (PS3.3 A.38): geometry, rescale and
    window only in the functional groups, frames written in ``order`` rather than in space."""
    first = slices[0]
    ds = Dataset()
    for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber",
                    "StudyID", "ReferringPhysicianName", "Modality", "FrameOfReferenceUID",
                    "BodyPartExamined", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, keyword, first.data_element(keyword).value)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 2, "Enhanced axial", 1
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    measures, orientation, rescale, window = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = first.PixelSpacing, first.SliceThickness
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    rescale.RescaleIntercept, rescale.RescaleSlope = first.RescaleIntercept, first.RescaleSlope
    rescale.RescaleType = "HU"
    window.WindowCenter, window.WindowWidth = first.WindowCenter, first.WindowWidth
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    shared.PixelValueTransformationSequence, shared.FrameVOILUTSequence = [rescale], [window]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in order:
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = slices[k].ImagePositionPatient
        content.InStackPositionNumber = k + 1
        item.PlanePositionSequence, item.FrameContentSequence = [position], [content]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = b"".join(slices[k].PixelData for k in order)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds
