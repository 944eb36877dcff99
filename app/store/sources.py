"""Finding the files an import should read: plain files, folders (recursively) and DICOMDIRs.

Only regular files are read. The walk decides what each name is from its metadata alone (nothing
is opened, so a pipe or a device cannot stall it), before the vault is locked; the read then opens
exactly that file, without following a link and without waiting on a pipe or device put in its
place, and only if it is still the file the walk saw. A link is followed once, to a regular file
inside the folder chosen; everything else is listed with the reason it was skipped.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom

from app.store.ingest import check_inflation
from app.store.limits import DEFAULT_LIMITS, IntakeLimits, Unreadable

READ_CHUNK = 1 << 30  # one read() returns at most 2 GiB on Linux
_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}
LINK_OUT = "a link that leads out of the folder chosen: not followed"


@dataclass(frozen=True)
class Source:
    path: Path  # the name found (shown in the report)
    problem: str | None = None  # set when the path itself cannot be used
    real: Path | None = None  # where its bytes are, without links
    identity: tuple[int, int] | None = None  # (device, inode) when it was found: the read opens that file
    size: int = 0


def skipped(mode: int) -> str:
    return f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'a special file')}): skipped"


def open_regular(path: Path) -> tuple[io.FileIO, os.stat_result]:
    """A regular file, opened without following a link and without blocking: a pipe or a device in
    its place is refused at once, never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("a link where a file was expected: not followed") from None
        raise Unreadable(f"file could not be read ({exc.strerror})") from None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        os.close(fd)
        raise Unreadable(skipped(found.st_mode))
    return io.FileIO(fd, "rb", closefd=True), found


def read_regular(path: Path, limits: IntakeLimits, identity: tuple[int, int] | None = None) -> bytes:
    """The bytes of the regular file at ``path`` (the one with ``identity``, if given), refused
    unread when it is larger than one file may be."""
    fh, found = open_regular(path)
    with fh:
        if identity is not None and (found.st_dev, found.st_ino) != identity:
            raise Unreadable("the file was replaced after the folder was read: not imported")
        if (refused := limits.file_refusal(found.st_size)) is not None:
            raise refused
        chunks, left = [], found.st_size + 1  # one byte more: a file that grew is noticed
        try:
            while left > 0 and (chunk := fh.read(min(left, READ_CHUNK))):
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            raise Unreadable(f"file could not be read ({exc.strerror})") from None
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) != found.st_size:
        raise Unreadable("the file changed while it was read: not imported")
    return data


def _found(path: Path, root: Path, *, missing: str = "no such file or folder", outside: str = LINK_OUT,
           damaged: str = "a file name here is damaged or its links loop") -> Source:
    """What ``path`` under ``root`` (a folder without links) is, from its metadata only."""
    try:
        if path.is_symlink() and (path.parent / os.readlink(path)).is_symlink():
            return Source(path, "a link to another link: not followed")
        real = path.resolve(strict=True)
        found = os.stat(real)
    except FileNotFoundError:
        return Source(path, "a link whose target is missing" if path.is_symlink() else missing)
    except (OSError, RuntimeError, ValueError):  # a loop, a NUL in the name, a folder we may not read
        return Source(path, damaged)
    if not real.is_relative_to(root):
        return Source(path, outside)
    if not stat.S_ISREG(found.st_mode):
        return Source(path, skipped(found.st_mode))
    return Source(path, real=real, identity=(found.st_dev, found.st_ino), size=found.st_size)


def _walk(top: Path) -> Iterator[Source]:
    """The files under ``top`` (followed if it is a link: the user chose it), in name order."""
    root = top.resolve()
    failed: list[OSError] = []
    for folder, dirs, files in os.walk(top, onerror=failed.append):
        yield from (Source(Path(exc.filename or folder), f"folder could not be read ({exc.strerror})")
                    for exc in failed)
        failed.clear()
        here = Path(folder)
        for name in sorted(dirs):
            if (here / name).is_symlink():  # os.walk lists it and does not enter it
                dirs.remove(name)
                link = _found(here / name, root)
                yield link if link.problem != skipped(stat.S_IFDIR) else \
                    Source(link.path, "a link to a folder: not followed (its files are read where they are)")
        dirs.sort()
        for name in sorted(files):
            if name.upper() != "DICOMDIR":  # its files are in this walk anyway
                yield _found(here / name, root)
    yield from (Source(Path(exc.filename or top), f"folder could not be read ({exc.strerror})")
                for exc in failed)


def _is_dicomdir(path: Path) -> bool:
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        fh, _ = open_regular(path)
        with fh:
            head = fh.read(132 + 512) or b""
    except (Unreadable, OSError):
        return False
    return head[128:132] == b"DICM" and b"1.2.840.10008.1.3.10" in head


def _from_dicomdir(path: Path, real: Path, limits: IntakeLimits) -> Iterator[Source]:
    """The files a DICOMDIR's records reference, each once, missing ones included (so they are
    reported; pydicom's FileSet would drop them silently)."""
    try:
        data = read_regular(real, limits)
        check_inflation(data, limits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = pydicom.dcmread(io.BytesIO(data)).DirectoryRecordSequence
            file_ids = [record.get("ReferencedFileID") for record in records]
    except Exception:
        yield Source(path, "DICOMDIR could not be read")
        return
    for file_id in file_ids:
        if file_id:  # (none: a patient, study or series record)
            parts = [file_id] if isinstance(file_id, str) else file_id
            yield _found(path.parent.joinpath(*(str(part) for part in parts)), real.parent,
                         missing="file listed in DICOMDIR is missing",
                         outside="file listed in DICOMDIR is outside the DICOMDIR's folder",
                         damaged="a file name in the DICOMDIR is damaged")


def _chosen(paths: list[Path], limits: IntakeLimits) -> Iterator[Source]:
    for path in paths:
        try:
            found = os.stat(path)  # a link chosen by name is followed: the choice is the user's
        except FileNotFoundError:
            yield Source(path, "no such file or folder")
            continue
        except (OSError, ValueError) as exc:
            yield Source(path, f"file could not be read ({getattr(exc, 'strerror', None) or 'bad name'})")
            continue
        if stat.S_ISDIR(found.st_mode):
            yield from _walk(path)
        elif not stat.S_ISREG(found.st_mode):
            yield Source(path, skipped(found.st_mode))
        elif _is_dicomdir(real := path.resolve()):
            yield from _from_dicomdir(path, real, limits)
        else:
            yield Source(path, real=real, identity=(found.st_dev, found.st_ino), size=found.st_size)


def iter_sources(paths: list[Path], limits: IntakeLimits = DEFAULT_LIMITS) -> Iterator[Source]:
    """Every file to import, once: a second name for the same file (a link, a hard link) is not
    read again; a DICOMDIR given by name stands for the files it lists. Raises CustodianError, before
    anything is read, once the files found are more, or more bytes, than one import may take."""
    seen: set[object] = set()
    files = size = 0
    for source in _chosen(paths, limits):
        key = source.identity or source.path
        if key in seen:
            continue
        seen.add(key)
        files += 1
        size += source.size if source.size <= limits.file_bytes else 0  # (a larger one is not read)
        limits.check_whole("import", files, size)
        yield source
