"""Sealed blobs an import wrote but has not indexed yet, kept apart so it needs no write lock.

An import reads, parses and seals outside the vault's write lock and takes the lock only to index
a batch, so a slow or hostile source never holds up the storage SCP or another import. Until then
its blobs (sealed: no plaintext reaches the disk) wait in a staging folder of its own, held by a
lease: an exclusive ``flock`` on the folder's lease file for as long as the importer lives. The
sweep of what interrupted imports left (under the write lock) removes a staging folder only once
its lease is free, so it never takes a blob a live import sealed and has not yet indexed; a kill
frees the lease with the process. At commit, under the write lock, a blob moves into the blob
store by a rename and its folder is synced before the index row that names it is committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from app.store.blobs import BlobStore

STAGING_DIR = "staging"
LEASE = ".lease"
JOURNAL = "journal"  # a receiver's records of what it acknowledged and has not indexed (app/store/journal.py)


class Staging:
    def __init__(self, folder: Path, lease: int) -> None:
        self.folder = folder
        self._lease = lease

    @classmethod
    def open(cls, home: Path) -> Staging:
        """A new staging folder under its lease; only under the write lock, so that no sweep sees
        the folder before its lease is held."""
        root = home / STAGING_DIR
        root.mkdir(mode=0o700, exist_ok=True)
        name = secrets.token_hex(8)
        lease = os.open(root / (name + LEASE), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(lease, fcntl.LOCK_EX)
        (root / name).mkdir(mode=0o700)
        return cls(root / name, lease)

    def write(self, blob_id: str, sealed: bytes | bytearray, *, sync: bool = True) -> None:
        """Write a sealed blob and fsync it (unless its writer syncs it in the blob store, after the
        rename); its name becomes durable with the rename at commit."""
        fd = os.open(self.folder / blob_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(sealed)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, blob_id: str) -> bytes:
        return (self.folder / blob_id).read_bytes()

    def adopt(self, blob_ids: Iterable[str], blobs: BlobStore) -> set[Path]:
        """Move staged blobs into the blob store (under the write lock): the folders to fsync
        before their index rows are committed."""
        folders: set[Path] = set()
        for blob_id in blob_ids:
            target = blobs.path(blob_id)
            if target.parent not in folders:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                folders.add(target.parent)
            os.rename(self.folder / blob_id, target)
        return folders

    def discard(self, blob_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / blob_id).unlink()

    def close(self, *, keep: bool = False) -> None:
        """Remove the folder (what is still in it was never indexed), then give up the lease;
        ``keep`` it (with its lease file) when its journal names blobs still to be indexed."""
        if self._lease < 0:
            return
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.folder.with_name(self.folder.name + LEASE).unlink()
        os.close(self._lease)
        self._lease = -1


def sweep_staging(home: Path) -> int:
    """Remove the staging folders whose importer has ended (its lease is free), with the blobs it
    sealed and never indexed; the number of blobs removed. Needs the write lock."""
    root = home / STAGING_DIR
    if not root.is_dir():
        return 0
    removed = 0
    for lease in root.glob("*" + LEASE):
        fd = os.open(lease, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live import's: its blobs are on their way into the index
            os.close(fd)
            continue
        try:
            folder = root / lease.name.removesuffix(LEASE)
            if _journaled(folder):  # acknowledged and not indexed: for the replay, never swept
                continue
            removed += _remove(folder)
            lease.unlink()
        finally:
            os.close(fd)
    for folder in root.iterdir():  # what a sweep that failed part of the way left without a lease
        if folder.is_dir() and not folder.with_name(folder.name + LEASE).exists():
            removed += _remove(folder)
    return removed


def _journaled(folder: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return (folder / JOURNAL).stat().st_size > 0
    return False


def _remove(folder: Path) -> int:
    count = sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return count
