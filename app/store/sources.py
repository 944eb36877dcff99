"""Finding the files an import should read: plain files, folders (recursively) and DICOMDIRs."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom


@dataclass(frozen=True)
class Source:
    path: Path
    problem: str | None = None  # set when the path itself cannot be used


def _is_dicomdir(path: Path) -> bool:
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132 + 512)
    except OSError:
        return False
    return head[128:132] == b"DICM" and b"1.2.840.10008.1.3.10" in head


def _from_dicomdir(path: Path) -> Iterator[Source]:
    """The files a DICOMDIR's records reference, each once, missing ones included (so they are
    reported; pydicom's FileSet would drop them silently)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = pydicom.dcmread(path).DirectoryRecordSequence
            file_ids = [record.get("ReferencedFileID") for record in records]
    except Exception:
        yield Source(path, "DICOMDIR could not be read")
        return
    root = path.parent.resolve()
    for file_id in file_ids:
        if not file_id:
            continue  # a patient, study or series record
        file = root.joinpath(*(str(part) for part in ([file_id] if isinstance(file_id, str) else file_id)))
        try:
            inside, present = file.resolve().is_relative_to(root), file.is_file()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
            yield Source(root, "a file name in the DICOMDIR is damaged")
            continue
        if not inside:  # a damaged or hostile reference
            yield Source(file, "file listed in DICOMDIR is outside the DICOMDIR's folder")
        elif not present:
            yield Source(file, "file listed in DICOMDIR is missing")
        else:
            yield Source(file)


def iter_sources(paths: list[Path]) -> Iterator[Source]:
    """Every file to import, once; a DICOMDIR given by name stands for the files it lists."""
    seen: set[Path] = set()

    def once(source: Source) -> Iterator[Source]:
        key = source.path.resolve()
        if key not in seen:
            seen.add(key)
            yield source

    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path, onerror=None):
                dirs.sort()
                for name in sorted(files):
                    file = Path(root) / name
                    if name.upper() == "DICOMDIR":
                        continue  # its files are in this walk anyway
                    yield from once(Source(file))
        elif path.is_file():
            if _is_dicomdir(path):
                for source in _from_dicomdir(path):
                    yield from once(source)
            else:
                yield from once(Source(path))
        else:
            yield Source(path, "no such file or folder")
