"""AES-256 encrypted ZIP (WinZip AE-2) that 7-Zip and WinZip open with the passphrase.

pyzipper writes the container (headers, data descriptors, central directory); the cryptography
of each entry is done here, ahead of the writer, in worker threads with OpenSSL. Profiling
pyzipper's own path on a 300-slice CT showed where its time goes: half in the per-entry key
derivation (PBKDF2-HMAC-SHA1, 1000 rounds, which the AE format requires with a fresh salt per
entry), the rest in AES-CTR and HMAC, all in the writing thread. OpenSSL's PBKDF2 is twice as
fast as pycryptodome's, and every step below releases the GIL, so two entries are encrypted at
once while the writer streams the previous ones to disk.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyzipper
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyzipper.zipfile_aes import WZ_AES_V2, AESZipEncrypter, AESZipInfo

from app.store.importer import Entry  # (name, how to get its bytes): here, the name in the archive

# WinZip AE: AES-256 (strength 3), 16-byte salt, 2-byte password check, 10-byte HMAC-SHA1 tag.
SALT_BYTES = 16
KEY_BYTES = 32
KDF_ROUNDS = 1000
AES_STRENGTH = 3
AHEAD = 8  # entries encrypted ahead of the writer (bounds memory to a few slices)



@dataclass(frozen=True)
class SealedEntry:
    name: str
    plain: bytes
    header: bytes  # salt + password check
    body: memoryview  # AES-CTR ciphertext
    tag: bytes  # truncated HMAC-SHA1 over the ciphertext


class _Counters:
    """WinZip's AES-CTR counts little-endian from 1, which OpenSSL's CTR mode (big-endian)
    cannot do; the counter blocks are made once and encrypted with AES-ECB into a keystream."""

    def __init__(self) -> None:
        self._blocks = b""
        self._lock = threading.Lock()

    def first(self, count: int) -> memoryview:
        if len(self._blocks) < count * 16:
            with self._lock:
                if len(self._blocks) < count * 16:
                    n = max(count, 1 << 16)
                    blocks = np.zeros((n, 2), dtype="<u8")
                    blocks[:, 0] = np.arange(1, n + 1, dtype="<u8")
                    self._blocks = blocks.tobytes()
        return memoryview(self._blocks)[: count * 16]


_COUNTERS = _Counters()


def seal_entry(passphrase: bytes, name: str, data: bytes) -> SealedEntry:
    salt = os.urandom(SALT_BYTES)
    material = PBKDF2HMAC(hashes.SHA1(), 2 * KEY_BYTES + 2, salt, KDF_ROUNDS).derive(passphrase)
    key, mac_key, check = material[:KEY_BYTES], material[KEY_BYTES:2 * KEY_BYTES], material[2 * KEY_BYTES:]
    blocks = (len(data) + 15) // 16
    stream = bytearray(blocks * 16 + 16)  # update_into wants one spare block
    Cipher(algorithms.AES(key), modes.ECB()).encryptor().update_into(_COUNTERS.first(blocks), stream)
    keystream = np.frombuffer(stream, dtype=np.uint8, count=len(data))
    np.bitwise_xor(keystream, np.frombuffer(data, dtype=np.uint8), out=keystream)
    body = memoryview(stream)[: len(data)]
    tag = hmac.new(mac_key, body, "sha1").digest()[:10]
    return SealedEntry(name, data, salt + check, body, tag)


class _SealedEncrypter(AESZipEncrypter):
    """Hands pyzipper an entry that was encrypted ahead of time."""

    def __init__(self, entry: SealedEntry) -> None:  # (no key derivation here: it was done)
        self.entry = entry
        self.aes_strength = AES_STRENGTH
        self.force_wz_aes_version = WZ_AES_V2  # AE-2: no CRC, which would leak small contents
        self.conditionally_include_crc = None
        self.min_bytes_to_include_crc = None

    def encryption_header(self) -> bytes:
        return self.entry.header

    def encrypt(self, data: bytes) -> bytes | memoryview:
        if not data:
            return b""
        if data is not self.entry.plain:
            raise RuntimeError("archive entry changed while it was written")
        return self.entry.body

    def flush(self) -> bytes:
        return self.entry.tag


class _SealedWriteFile(pyzipper.zipfile._ZipWriteFile):
    """pyzipper's entry writer without the CRC-32 pass over the plaintext: AE-2 stores none."""

    def write(self, data: bytes) -> int:
        body = self._encrypter.encrypt(data)
        self._file_size += len(data)
        self._compress_size += len(body)
        self._fileobj.write(body)
        return len(data)


class _Zip(pyzipper.AESZipFile):
    zipwritefile_cls = _SealedWriteFile
    sealed: SealedEntry
    made: tuple[int, ...] = (1980, 1, 1, 0, 0, 0)

    def get_encrypter(self) -> _SealedEncrypter:
        return _SealedEncrypter(self.sealed)


class HashingWriter:
    """A write-only stream that hashes what passes: pyzipper then writes strictly forward (data
    descriptors instead of seeking back), so the container's SHA-256 needs no second read."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self.sha256.update(data)
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


def write_zip(out: BinaryIO, passphrase: str, entries: Iterable[Entry],
              progress: Callable[[int], None] | None = None, workers: int = 2) -> str:
    """Write ``entries`` in order as an encrypted ZIP; returns the SHA-256 of the container.

    Each entry's bytes are fetched and encrypted in a worker thread, at most :data:`AHEAD`
    entries before the writer needs them.
    """
    secret = passphrase.encode()
    stream = HashingWriter(out)

    def seal(name: str, load: Callable[[], bytes]) -> SealedEntry:
        return seal_entry(secret, name, load())

    pending: deque[Future[SealedEntry]] = deque()
    written = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="export") as pool, \
            _Zip(stream, "w", compression=pyzipper.ZIP_STORED, encryption=pyzipper.WZ_AES) as archive:
        archive.made = time.localtime()[:6]
        try:
            for name, load in entries:
                pending.append(pool.submit(seal, name, load))
                if len(pending) >= AHEAD:
                    written = _write_next(archive, pending, written, progress)
            while pending:
                written = _write_next(archive, pending, written, progress)
        finally:
            for future in pending:
                future.cancel()
    stream.flush()
    return stream.sha256.hexdigest()


def _write_next(archive: _Zip, pending: deque[Future[SealedEntry]], written: int,
                progress: Callable[[int], None] | None) -> int:
    entry = pending.popleft().result()
    archive.sealed = entry
    info = AESZipInfo(entry.name, date_time=archive.made)
    info.compress_type = pyzipper.ZIP_STORED
    info.external_attr = 0o644 << 16
    archive.writestr(info, entry.plain)
    if progress:
        progress(written + 1)
    return written + 1
