"""Outside media: CDs, USB sticks, CD images and zip files another hospital gave the patient.

Everything is read into memory file by file (never unpacked to disk), surveyed before import so
the librarian sees what is on it, and reconciled with the local patient record: either the
outside Patient ID is replaced by the local one (the outside ID kept in Other Patient IDs, as in
IHE Import Reconciliation), or it is kept and qualified with the issuer it came from, so it can
never be mistaken for a local patient with the same number.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import pycdlib
import pydicom
import pyzipper
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.errors import CustodianError, UsageError
from app.store.importer import Entry, Unreadable, read_source
from app.store.sources import iter_sources

MAX_MEMBER_BYTES = 2 * 1024 * 1024 * 1024
# What else PDI media carries (IHE_PDI web content, viewers, autorun, READMEs): not imported.
OTHER_SUFFIXES = {".TXT", ".HTM", ".HTML", ".XML", ".XSL", ".CSS", ".JS", ".EXE", ".DLL", ".INF", ".INI",
                  ".PDF", ".JPG", ".JPEG", ".PNG", ".GIF", ".ICO", ".BMP", ".CAB", ".MSI", ".BAT", ".CMD",
                  ".JAR", ".APP", ".PLIST", ".SH", ".LOG", ".DS_STORE"}


def is_other(name: str) -> bool:
    """Not a DICOM file of the media (its directory, web pages, a viewer, a README)."""
    path = PurePosixPath(name.replace("\\", "/"))
    name = path.name.upper()
    return name in ("DICOMDIR", "README", "AUTORUN") or path.suffix.upper() in OTHER_SUFFIXES or \
        any(part.upper() == "IHE_PDI" for part in path.parts) or name.startswith(".")


@dataclass(frozen=True)
class Reconcile:
    """How an outside patient's identity is recorded here (give one of the two)."""

    local_patient_id: str = ""  # the patient is known here under this ID
    outside_issuer: str = ""  # keep the outside ID, qualified by where it came from

    def __post_init__(self) -> None:
        if bool(self.local_patient_id.strip()) == bool(self.outside_issuer.strip()):
            raise UsageError("Reconcile the outside patient either with a local Patient ID or by naming "
                             "the issuer of the outside ID, not both.")

    def apply(self, data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        outside_id, outside_issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
        if self.local_patient_id:
            other = Dataset()
            other.PatientID = outside_id
            other.IssuerOfPatientID = outside_issuer
            other.TypeOfPatientID = "TEXT"
            ds.OtherPatientIDsSequence = Sequence([*ds.get("OtherPatientIDsSequence", []), other])
            ds.PatientID = self.local_patient_id.strip()
            if "IssuerOfPatientID" in ds:
                del ds.IssuerOfPatientID
        else:
            ds.IssuerOfPatientID = self.outside_issuer.strip()[:64]
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()


@dataclass
class OutsideStudy:
    study_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    study_date: str
    description: str
    modalities: set[str] = field(default_factory=set)
    instances: int = 0

    def as_json(self) -> dict[str, object]:
        return {"study_uid": self.study_uid, "patient_id": self.patient_id, "issuer": self.issuer,
                "patient_name": self.patient_name, "birth_date": self.birth_date,
                "study_date": self.study_date, "description": self.description,
                "modalities": sorted(self.modalities), "instances": self.instances}


@dataclass
class Survey:
    studies: list[OutsideStudy]
    unreadable: int  # files that are not DICOM (viewers, autorun, README): left alone


def open_media(path: Path, passphrase: str | None = None) -> list[Entry]:
    """The files on outside media, each read when asked for: a folder or mounted CD/USB (with or
    without DICOMDIR), a DICOMDIR, a CD image (.iso), or a zip (AES-encrypted with ``passphrase``)."""
    if path.is_file() and path.suffix.lower() == ".iso":
        return _iso_entries(path, passphrase)
    if path.is_file() and path.suffix.lower() == ".zip":
        return _zip_entries(path.read_bytes, str(path), passphrase)
    if not path.exists():
        raise CustodianError("The media could not be read: there is no such file or folder.")
    # A file that cannot be read (listed but missing, unreadable) is refused with its reason; the rest go on.
    return [(str(source.path), partial(read_source, source)) for source in iter_sources([path])
            if not is_other(str(source.path))]


def _damaged_member(read: Callable[[], bytes], media: str) -> Callable[[], bytes]:
    """A file the media's damage makes unreadable is refused with a reason; the rest go on."""

    def guarded() -> bytes:
        try:
            return read()
        except Exception:  # zip and ISO readers raise many kinds of errors on damaged bytes
            raise Unreadable(f"it could not be read from the {media}: the media is damaged") from None

    return guarded


def _zip_entries(read: Callable[[], bytes], label: str, passphrase: str | None) -> list[Entry]:
    try:
        archive = pyzipper.AESZipFile(io.BytesIO(read()))
        members = [m for m in archive.infolist() if not m.is_dir()]
        if any(m.flag_bits & 0x1 for m in members):
            if not passphrase:
                raise UsageError("The zip file is encrypted: give its passphrase "
                                 "(CUSTODIAN_MEDIA_PASSPHRASE or the prompt).")
            archive.setpassword(passphrase.encode())
            archive.read(members[0].filename)  # a wrong passphrase fails here, before anything is imported
    except UsageError:
        raise
    except Exception:  # a damaged zip fails in the zip reader in many ways
        raise CustodianError("The zip file could not be opened: it is damaged or the passphrase is wrong.") \
            from None
    if any(m.file_size > MAX_MEMBER_BYTES for m in members):
        raise CustodianError("The zip file holds a member larger than 2 GiB; it is refused.")
    return [(f"{label}:{m.filename}", _damaged_member(partial(archive.read, m.filename), "zip file"))
            for m in members if not is_other(m.filename)]


def _iso_entries(path: Path, passphrase: str | None) -> list[Entry]:
    image = pycdlib.PyCdlib()
    try:
        image.open(str(path))
        joliet = image.has_joliet()
        key = "joliet_path" if joliet else "iso_path"
        listing = [(folder, files) for folder, _dirs, files in image.walk(**{key: "/"})]
    except Exception:  # pycdlib's own errors, and struct or value errors on damaged directory records
        raise CustodianError("The CD image could not be read: it is not an ISO 9660 image "
                             "or it is damaged.") from None
    entries: list[Entry] = []
    for folder, files in listing:
        for name in files:
            inner = f"{folder.rstrip('/')}/{name}"
            shown = inner if joliet else inner.split(";")[0]

            def read(inner: str = inner) -> bytes:
                buffer = io.BytesIO()
                image.get_file_from_iso_fp(buffer, **{key: inner})
                return buffer.getvalue()

            if shown.upper().endswith(".ZIP"):  # an encrypted export (ours or another's) on the CD
                entries += _zip_entries(read, f"{path}:{shown}", passphrase)
            elif not is_other(shown):
                entries.append((f"{path}:{shown}", _damaged_member(read, "CD image")))
    return entries


def survey(entries: list[Entry]) -> Survey:
    """What studies the media holds (headers only)."""
    studies: dict[str, OutsideStudy] = {}
    unreadable = 0
    for _label, read in entries:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(read()), stop_before_pixels=True)
            uid = str(ds.StudyInstanceUID)
        except Exception:  # not DICOM, or unusable: the import quarantines what claims to be DICOM
            unreadable += 1
            continue
        study = studies.setdefault(uid, OutsideStudy(
            uid, str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", "")),
            str(ds.get("PatientName", "")), str(ds.get("PatientBirthDate", "")), str(ds.get("StudyDate", "")),
            str(ds.get("StudyDescription", ""))))
        study.modalities.add(str(ds.get("Modality", "")))
        study.instances += 1
    return Survey(sorted(studies.values(), key=lambda s: (s.patient_id, s.study_date)), unreadable)


def reconciled(entries: list[Entry], reconcile: Reconcile | None) -> Iterator[Entry]:
    for label, read in entries:
        if reconcile is None:
            yield label, read
        else:
            yield label, partial(_read_reconciled, reconcile, read)


def _read_reconciled(reconcile: Reconcile, read: Callable[[], bytes]) -> bytes:
    return _reconciled_or_raw(reconcile, read())


def _reconciled_or_raw(reconcile: Reconcile, data: bytes) -> bytes:
    """A file that does not parse goes to the import as it is, which quarantines it with a reason."""
    try:
        return reconcile.apply(data)
    except Exception:
        return data
