"""Encrypted instance blobs: one AES-256-GCM sealed file per instance, opaque file names.

File names are random ids kept in the index, so the blob folder reveals neither UIDs nor how
instances group into studies. Each blob is bound to what it holds by the associated data (the
SOP Instance UID for instances), so a blob swapped for another one fails authentication.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.atomicfile import fsync_dir, write_durable

BLOB_DIR = "blobs"
MAGIC = b"CSTB\x01"
_HEADER = len(MAGIC) + 12


class BlobDamaged(Exception):
    """The blob is missing, unreadable or fails authentication; the message is safe to show."""


def instance_aad(sop_uid: str) -> bytes:
    return b"custodian/instance/" + sop_uid.encode("ascii", "replace")


def quarantine_aad(blob_id: str) -> bytes:
    return b"custodian/quarantine/" + blob_id.encode("ascii")


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytearray:
    """Header, ciphertext and tag in one buffer: an image is encrypted once and never copied."""
    nonce = os.urandom(12)
    sealed = bytearray(_HEADER + len(plaintext) + 16)
    sealed[:_HEADER] = MAGIC + nonce
    AESGCM(key).encrypt_into(nonce, plaintext, aad, memoryview(sealed)[_HEADER:])
    return sealed


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < _HEADER + 16 or not sealed.startswith(MAGIC):
        raise BlobDamaged("blob header is damaged")
    try:
        view = memoryview(sealed)  # the ciphertext is decrypted where it lies, not copied first
        return AESGCM(key).decrypt(view[len(MAGIC) : _HEADER], view[_HEADER:], aad)
    except InvalidTag:
        raise BlobDamaged("blob failed authentication (altered, truncated or not this instance)") from None


class BlobStore:
    def __init__(self, home: Path) -> None:
        self.root = home / BLOB_DIR

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    def write(self, blob_id: str, sealed: bytes | bytearray) -> Path:
        """Durably write one blob; the caller fsyncs the returned parent folders once per batch."""
        path = self.path(blob_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durable(path, sealed, sync_dir=False)
        return path.parent

    def sync(self, blob_id: str) -> None:
        """Make a blob's bytes durable (its name needs its folder synced too)."""
        fd = os.open(self.path(blob_id), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def sync_dirs(dirs: set[Path]) -> None:
        for folder in dirs:
            fsync_dir(folder)

    def read(self, blob_id: str) -> bytes:
        try:
            return self.path(blob_id).read_bytes()
        except FileNotFoundError:
            raise BlobDamaged("blob file is missing") from None
        except OSError as exc:
            raise BlobDamaged(f"blob file could not be read ({exc.strerror})") from None

    def delete(self, blob_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(blob_id).unlink()

    def sweep(self, known: set[str]) -> int:
        """Remove blobs no index row refers to (left by an interrupted import); needs the write lock."""
        removed = 0
        if not self.root.exists():
            return 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.endswith(".tmp") or entry.name not in known:
                    entry.unlink()
                    removed += 1
        return removed
