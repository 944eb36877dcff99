"""Synthetic, PHI-free studies for the demo, tests and benchmarks.

The default phantoms have known geometry (a water cylinder with a bone insert of known radius) so
viewers and measurements can be checked against exact numbers; the demo passes the anatomical
ones of :mod:`app.demo.anatomy` instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

Phantom = Callable[[int, int], np.ndarray]  # (size, slice index) -> stored pixel values


@dataclass(frozen=True)
class Patient:
    patient_id: str
    name: str
    birth_date: str = "19600101"
    sex: str = "O"


def _base(patient: Patient, study_uid: str, sop_class: str, modality: str, date: str,
          description: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date
    ds.StudyTime = "101500"
    ds.StudyDescription = description
    ds.AccessionNumber = f"A{abs(hash(study_uid)) % 10**8:08d}"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = "Demo^Referrer"
    ds.Modality = modality
    return ds


def _series_member(ds: Dataset, series_uid: str, frame_uid: str, number: int, description: str,
                   body_part: str) -> None:
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = frame_uid
    ds.BodyPartExamined = body_part
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _image(ds: Dataset, pixels: np.ndarray, index: int, z: float, spacing: float) -> None:
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-pixels.shape[1] * spacing / 2, -pixels.shape[0] * spacing / 2, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing, spacing]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = pixels.tobytes()


def ct_phantom(size: int, index: int) -> np.ndarray:
    """Stored values (rescale intercept -1024): air, a water cylinder, a bone rod that drifts."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    hu = np.full((size, size), -1000, np.int16)
    hu[r < size * 0.40] = 0
    rod = np.hypot(yy - size / 2, xx - size * (0.40 + 0.002 * index)) < size * 0.06
    hu[rod] = 1000
    return (hu + 1024).astype(np.int16)


def mr_phantom(size: int, index: int) -> np.ndarray:
    """A head-shaped ellipse with rings of signal that shift from slice to slice."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot((yy - size / 2) / 0.8, xx - size / 2)
    head = np.where(r < size * 0.42, 600 + 200 * np.cos(r / 9 + index / 5), 0)
    return np.clip(head, 0, 4095).astype(np.uint16)


def ct_study(patient: Patient, *, slices: int = 40, size: int = 256, date: str = "20260315",
             description: str = "CT CHEST", study_uid: str | None = None,
             body_part: str = "CHEST", phantom: Phantom = ct_phantom) -> list[Dataset]:
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    result = []
    for i in range(slices):
        ds = _base(patient, study_uid, CTImageStorage, "CT", date, description)
        _series_member(ds, series_uid, frame_uid, 1, "Axial 2.5 mm", body_part)
        ds.SliceThickness = 2.5
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        _image(ds, phantom(size, i), i, -i * 2.5, 350.0 / size)
        result.append(ds)
    return result


def mr_study(patient: Patient, *, slices: int = 20, size: int = 192, date: str = "20260316",
             description: str = "MR BRAIN", phantom: Phantom = mr_phantom,
             window: tuple[int, int] = (500, 1000)) -> list[Dataset]:
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    result = []
    for i in range(slices):
        ds = _base(patient, study_uid, MRImageStorage, "MR", date, description)
        _series_member(ds, series_uid, frame_uid, 3, "T1 axial", "HEAD")
        ds.WindowCenter, ds.WindowWidth = window
        _image(ds, phantom(size, i), i, i * 5.0, 230.0 / size)
        result.append(ds)
    return result


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
