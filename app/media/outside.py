"""Outside media: CDs, USB sticks, CD images and zip files another hospital gave the patient.

Everything is read into memory file by file (never unpacked to disk), surveyed before import so
the librarian sees what is on it, and reconciled with the local patient record: either the
outside Patient ID is replaced by the local one (the outside ID kept in Other Patient IDs, as in
IHE Import Reconciliation), or it is kept and qualified with the issuer it came from, so it can
never be mistaken for a local patient with the same number.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NoReturn

import pycdlib
import pydicom
import pyzipper
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.errors import CustodianError, UsageError
from app.store.importer import Entry, read_source
from app.store.ingest import check_inflation
from app.store.limits import DEFAULT_LIMITS, IntakeLimits, OverLimit, Unreadable
from app.store.sources import iter_sources, open_regular

ISO_BLOCK = 2048
# What a zip member may be packed with: stored or deflated (what media and our exports use). The
# zip reader inflates those a step at a time; bzip2 and LZMA it inflates a chunk at once, which a
# crafted chunk turns into gigabytes.
ZIP_METHODS = {pyzipper.ZIP_STORED, pyzipper.ZIP_DEFLATED}
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
        local, issuer = bool(self.local_patient_id.strip()), bool(self.outside_issuer.strip())
        if local == issuer:
            missing = "give only one of the two." if local else "neither was given."
            raise UsageError("Reconcile the outside patient with a local Patient ID or with the issuer "
                             f"of the outside ID: {missing}")

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


def open_media(path: Path, passphrase: str | None = None, limits: IntakeLimits = DEFAULT_LIMITS
               ) -> list[Entry]:
    """The files on outside media, each read when asked for: a folder or mounted CD/USB (with or
    without DICOMDIR), a DICOMDIR, a CD image (.iso), or a zip (AES-encrypted with ``passphrase``).
    What the media declares (sizes, members, extents) is checked against ``limits`` here, before
    anything is read; a member refused for it is an entry whose read says why."""
    try:
        found = os.stat(path)  # a link chosen by name is followed: the choice is the user's
    except (OSError, ValueError):
        raise CustodianError("The media could not be read: there is no such file or folder.") from None
    if stat.S_ISREG(found.st_mode) and path.suffix.lower() in (".iso", ".zip"):
        try:
            image, _ = open_regular(path.resolve())
        except Unreadable as exc:
            raise CustodianError(f"The media could not be read: {exc}.") from None
        if path.suffix.lower() == ".iso":
            return _iso_entries(image, str(path), passphrase, limits)
        return _zip_entries(lambda: image, str(path), passphrase, limits)
    # A file that cannot be read (listed but missing, unreadable) is refused with its reason; the rest go on.
    return [(str(source.path), partial(read_source, source, limits))
            for source in iter_sources([path], limits) if not is_other(str(source.path))]


def _damaged_member(read: Callable[[], bytes], media: str) -> Callable[[], bytes]:
    """A file the media's damage makes unreadable is refused with a reason; the rest go on."""

    def guarded() -> bytes:
        try:
            return read()
        except Unreadable:
            raise
        except Exception:  # zip and ISO readers raise many kinds of errors on damaged bytes
            raise Unreadable(f"it could not be read from the {media}: the media is damaged") from None

    return guarded


def _refused(why: OverLimit) -> NoReturn:
    raise why


def _unpacked(read: Callable[[], bytes]) -> BinaryIO:
    return io.BytesIO(read())


def _zip_entries(opened: Callable[[], BinaryIO], label: str, passphrase: str | None,
                 limits: IntakeLimits) -> list[Entry]:
    try:
        archive = pyzipper.AESZipFile(opened())
        members = [m for m in archive.infolist() if not m.is_dir()]
        if any(m.flag_bits & 0x1 for m in members):
            if not passphrase:
                raise UsageError("The zip file is encrypted: give its passphrase "
                                 "(CUSTODIAN_MEDIA_PASSPHRASE or the prompt).")
            archive.setpassword(passphrase.encode())
            with archive.open(members[0]) as first:  # a wrong passphrase fails here, before any import
                first.read(1)
    except UsageError:
        raise
    except Exception:  # a damaged zip fails in the zip reader in many ways
        raise CustodianError("The zip file could not be opened: it is damaged or the passphrase is wrong.") \
            from None
    members = [m for m in members if not is_other(m.filename)]
    limits.check_whole("zip file", len(members), sum(m.file_size for m in members))
    shared = _overlapping(members)
    entries: list[Entry] = []
    for m in members:
        why = _zip_refusal(m, m.filename in shared, limits)
        read = partial(_refused, why) if why else \
            _damaged_member(partial(_read_member, archive, m), "zip file")
        entries.append((f"{label}:{m.filename}", read))
    return entries


def _zip_refusal(member: pyzipper.ZipInfo, shared: bool, limits: IntakeLimits) -> OverLimit | None:
    """Why a member is refused unread, from what the zip's directory declares; None if it is not.
    (The zip reader stops at the declared size and checks the CRC, so a member cannot lie about it.)"""
    if member.compress_type not in ZIP_METHODS:
        return OverLimit("it is packed with a method other than stored or deflated: refused unread")
    if shared:
        return OverLimit("its packed data overlaps another member's: refused as a zip bomb")
    if member.file_size > limits.inflation_cap(member.compress_size):
        return limits.too_inflated(member.file_size)
    return None


def _overlapping(members: list[pyzipper.ZipInfo]) -> set[str]:
    """Members whose packed data overlaps another's (an overlapping zip bomb inflates one packed
    kernel under many names): each member's data must end before the next one's header."""
    shared: set[str] = set()
    ordered = sorted(members, key=lambda m: m.header_offset)
    end, last = -1, None
    for m in ordered:
        if last is not None and m.header_offset < end:
            shared |= {m.filename, last.filename}
        # at least the fixed local header and the name come before the packed data
        mine = m.header_offset + 30 + len(m.orig_filename.encode("utf-8", "replace")) + m.compress_size
        if mine > end:
            end, last = mine, m
    return shared


def _read_member(archive: pyzipper.AESZipFile, member: pyzipper.ZipInfo) -> bytes:
    with archive.open(member) as packed:
        data: bytes = packed.read(member.file_size + 1)
    return data


def _iso_entries(file: BinaryIO, label: str, passphrase: str | None, limits: IntakeLimits) -> list[Entry]:
    image = pycdlib.PyCdlib()
    try:
        image.open_fp(file)
        joliet = image.has_joliet()
        key = "joliet_path" if joliet else "iso_path"
        listing = [(inner, image.get_record(**{key: inner}))
                   for folder, _dirs, files in image.walk(**{key: "/"})
                   for inner in (f"{folder.rstrip('/')}/{name}" for name in files)]
        extents = [(record.extent_location() * ISO_BLOCK, record.get_data_length()) for _, record in listing]
    except Exception:  # pycdlib's own errors, and struct or value errors on damaged directory records
        raise CustodianError("The CD image could not be read: it is not an ISO 9660 image "
                             "or it is damaged.") from None
    entries: list[Entry] = []
    crossing, taken = _crossing(extents), set()
    seeking = threading.Lock()  # the import's readers share the image's one file position
    for (inner, _), (start, length) in zip(listing, extents, strict=True):
        shown = inner if joliet else inner.split(";")[0]
        if is_other(shown) or (length and (start, length) in taken):
            continue  # not an instance, or another name (a hard link) for data read once already
        taken.add((start, length))

        def read(inner: str = inner) -> bytes:
            buffer = io.BytesIO()
            with seeking:
                image.get_file_from_iso_fp(buffer, **{key: inner})
            return buffer.getvalue()

        why = limits.file_refusal(length) or (OverLimit(
            "its data overlaps another file's on the CD image: refused as a crafted image")
            if (start, length) in crossing else None)
        if why:
            entries.append((f"{label}:{shown}", partial(_refused, why)))
        elif shown.upper().endswith(".ZIP"):  # an encrypted export (ours or another's) on the CD
            entries += _zip_entries(partial(_unpacked, read), f"{label}:{shown}", passphrase, limits)
        else:
            entries.append((f"{label}:{shown}", _damaged_member(read, "CD image")))
    limits.check_whole("CD image", len(entries), sum(length for _, length in taken))
    return entries


def _crossing(extents: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The extents (start, length) that overlap another, different one: a CD image's files each
    have their own (hard links share one exactly, and are read once)."""
    crossing: set[tuple[int, int]] = set()
    end, last = -1, (0, 0)
    for start, length in sorted({e for e in extents if e[1]}):
        if start < end:
            crossing |= {(start, length), last}
        if start + length > end:
            end, last = start + length, (start, length)
    return crossing


def survey(entries: list[Entry], limits: IntakeLimits = DEFAULT_LIMITS) -> Survey:
    """What studies the media holds (headers only)."""
    studies: dict[str, OutsideStudy] = {}
    unreadable = 0
    for _label, read in entries:
        try:
            data = read()
            check_inflation(data, limits)  # pydicom would inflate a deflated bomb whole
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
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


def reconciled(entries: list[Entry], reconcile: Reconcile | None,
               limits: IntakeLimits = DEFAULT_LIMITS) -> Iterator[Entry]:
    for label, read in entries:
        if reconcile is None:
            yield label, read
        else:
            yield label, partial(_read_reconciled, reconcile, read, limits)


def _read_reconciled(reconcile: Reconcile, read: Callable[[], bytes], limits: IntakeLimits) -> bytes:
    data = read()
    check_inflation(data, limits)  # before pydicom inflates it whole to rewrite it
    return _reconciled_or_raw(reconcile, data)


def _reconciled_or_raw(reconcile: Reconcile, data: bytes) -> bytes:
    """A file that does not parse goes to the import as it is, which quarantines it with a reason."""
    try:
        return reconcile.apply(data)
    except Exception:
        return data
