"""Writing export media: the encrypted PDI archive, the CD image around it, and the file that only
appears under its name once it is complete.

Media is written to an unnamed file (Linux O_TMPFILE) in the destination folder and linked to its
name at the end: a killed export leaves nothing behind, not even a partial file to clean up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pycdlib

from app.errors import CustodianError, UsageError
from app.media.archive import write_zip
from app.media.disclosures import MediaKind
from app.store.importer import Entry

ARCHIVE_NAME = "IMAGES.ZIP"  # on a CD, beside the README
VOLUME_ID = "CUSTODIAN"
VIEWER_POINTER = "https://www.microdicom.com/ (Windows), https://weasis.org/ (Windows, macOS, Linux)"


def readme(serial: str, institution: str, *, inside: bool) -> bytes:
    """README.TXT per IHE PDI: what the media holds and how to open it. The copy outside the
    encryption (on a CD) says nothing about the patient."""
    lines = [
        "Medical images (DICOM) - IHE Portable Data for Imaging",
        f"Media serial: {serial}",
        f"Created by: {institution} with Custodian",
        "",
    ]
    if inside:
        lines += [
            "DICOMDIR lists every study on this media; the images are in the DICOM folder.",
            "Open DICOMDIR with any DICOM viewer, for example:",
            f"  {VIEWER_POINTER}",
        ]
    else:
        lines += [
            f"The images are in {ARCHIVE_NAME}, encrypted with AES-256.",
            "The passphrase was given to you separately; it is not on this media.",
            f"Open {ARCHIVE_NAME} with 7-Zip (https://www.7-zip.org/), WinZip, Keka (macOS)",
            "or 'unzip'-compatible tools that support AES, and enter the passphrase.",
            "Then open DICOMDIR with any DICOM viewer, for example:",
            f"  {VIEWER_POINTER}",
        ]
    lines += ["", "If you received this media by mistake, please return it unopened to the sender."]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


class OutputFile:
    """A file that exists under ``path`` only after :meth:`publish`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            raise UsageError(f"{path.name} already exists; choose another file name.")
        if not path.parent.is_dir():
            raise UsageError(f"The folder {path.parent} does not exist.")
        self._named: Path | None = None
        try:
            fd = os.open(path.parent, os.O_TMPFILE | os.O_RDWR, 0o600)
        except (AttributeError, OSError):  # no O_TMPFILE (other systems, some file systems)
            self._named = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial"
            fd = os.open(self._named, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        self.file: io.BufferedRandom = os.fdopen(fd, "w+b")

    def sha256(self) -> tuple[str, int]:
        """Read back what was written (for formats whose writer seeks)."""
        self.file.flush()
        self.file.seek(0)
        digest = hashlib.file_digest(self.file, "sha256")
        return digest.hexdigest(), self.file.tell()

    @contextlib.contextmanager
    def syncing(self, every: float = 0.1) -> Iterator[None]:
        """Flush what the kernel holds to the disk while the media is still being written, so the
        final fsync before the disclosure is recorded has only the tail left to wait for."""
        stop = threading.Event()

        def sync() -> None:
            while not stop.wait(every):
                with contextlib.suppress(OSError):
                    os.fdatasync(self.file.fileno())

        worker = threading.Thread(target=sync, name="media-sync", daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join()

    def publish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            if self._named is None:
                # linkat(AT_SYMLINK_FOLLOW) on the descriptor; a folder descriptor makes Python
                # call linkat rather than link, which would not follow /proc's link
                os.link(f"/proc/self/fd/{self.file.fileno()}", self.path.name, dst_dir_fd=folder,
                        follow_symlinks=True)
            else:
                os.link(self._named, self.path)  # fails, rather than overwrites, if the name was taken
            os.fsync(folder)
        except FileExistsError:
            raise UsageError(f"{self.path.name} appeared while the export ran; "
                             "nothing was overwritten.") from None
        finally:
            os.close(folder)

    def close(self) -> None:
        self.file.close()
        if self._named is not None:
            self._named.unlink(missing_ok=True)

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_media(output: OutputFile, kind: MediaKind, passphrase: str, entries: list[Entry],
                outer_readme: bytes, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Write the media into ``output``; returns the SHA-256 and size of what was written."""
    try:
        if kind is MediaKind.ZIP:
            with output.syncing():
                digest = write_zip(output.file, passphrase, entries, progress)
            output.file.flush()
            return digest, output.file.tell()
        # the archive before it goes into the CD image: unnamed too, and ciphertext only
        with tempfile.TemporaryFile(dir=output.path.parent) as archive:
            write_zip(archive, passphrase, entries, progress)
            size = archive.tell()
            archive.seek(0)
            image = pycdlib.PyCdlib()
            image.new(interchange_level=1, joliet=3, vol_ident=VOLUME_ID)
            image.add_fp(archive, size, f"/{ARCHIVE_NAME};1", joliet_path=f"/{ARCHIVE_NAME}")
            image.add_fp(io.BytesIO(outer_readme), len(outer_readme), "/README.TXT;1",
                         joliet_path="/README.TXT")
            image.write_fp(output.file)
            image.close()
        return output.sha256()
    except OSError as exc:
        raise CustodianError(f"The media could not be written: {exc.strerror or exc}.") from None


def burners() -> list[str]:
    """Optical writers xorriso can see (none on most workstations and on this test machine)."""
    if shutil.which("xorriso") is None:
        return []
    result = subprocess.run(["xorriso", "-devices"], capture_output=True, text=True, timeout=30, check=False)
    return [line.split("'")[1] for line in result.stdout.splitlines() if "-dev '" in line]


def burn(image: Path, device: str) -> None:
    """Burn a finished CD image with xorriso; the image stays as the record of what was burnt."""
    result = subprocess.run(["xorriso", "-as", "cdrecord", f"dev={device}", "-v", "-eject", str(image)],
                            capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode != 0:
        raise CustodianError(f"The CD could not be burnt on {device}; the image is kept at {image}.")
