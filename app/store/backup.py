"""The backup container: one file, encrypted as a whole, readable as a stream.

A backup holds the vault's index (already SQLCipher-encrypted), its blobs (already AES-GCM
sealed), the key store and the master keys; the master keys would otherwise stay in this
machine's keyring, and a backup that only this machine can open is no contingency plan. So the
whole stream is sealed again under a key derived (Argon2id) from the backup passphrase.

Layout: ``MAGIC``, a 4-byte length and the JSON header (KDF parameters, vault id, time,
counts), then the tar stream in AES-256-GCM chunks of ``CHUNK`` bytes. Each chunk's nonce is its
number, and its associated data binds the header's hash, the number and whether it is the last,
so a reordered, spliced, truncated or edited backup fails to open instead of restoring
something else.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import CustodianError
from app.security.keys import derive_kek, new_kdf

MAGIC = b"CUSTODIAN BACKUP\n\x00\x01"
CHUNK = 1 << 20
MIN_PASSPHRASE = 16
_LENGTH = struct.Struct(">I")
_TAG = 16


class BackupDamaged(CustodianError):
    exit_code = 4


@dataclass(frozen=True)
class BackupHeader:
    vault_id: str
    created: str
    instances: int
    kdf: dict[str, object]

    def encode(self) -> bytes:
        return json.dumps({"format": 1, "vault_id": self.vault_id, "created": self.created,
                           "instances": self.instances, "kdf": self.kdf}, sort_keys=True).encode()


def check_passphrase(passphrase: str | None) -> str:
    if not passphrase or len(passphrase) < MIN_PASSPHRASE:
        raise CustodianError(f"A backup passphrase of at least {MIN_PASSPHRASE} characters is needed "
                             "(set CUSTODIAN_BACKUP_PASSPHRASE or enter it); keep it apart from the backup.")
    return passphrase


def _aad(header_hash: bytes, number: int, last: bool) -> bytes:
    return header_hash + struct.pack(">Q?", number, last)


def _nonce(number: int) -> bytes:
    return struct.pack(">4xQ", number)


class _SealingWriter(io.RawIOBase):
    """What tarfile writes, sealed chunk by chunk into ``out``."""

    def __init__(self, out: BinaryIO | Digesting, key: bytes, header_hash: bytes) -> None:
        self._out, self._aead, self._hash = out, AESGCM(key), header_hash
        self._buffer = bytearray()
        self._number = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep at least one byte back: the last chunk is marked
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def finish(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()

    def _seal(self, plain: bytes, *, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._number), plain, _aad(self._hash, self._number, last))
        self._out.write(_LENGTH.pack(len(sealed)) + sealed)
        self._number += 1


class _OpeningReader(io.RawIOBase):
    """The tar stream, opened chunk by chunk; anything out of place raises BackupDamaged."""

    def __init__(self, source: BinaryIO | Digesting, key: bytes, header_hash: bytes) -> None:
        self._source, self._aead, self._hash = source, AESGCM(key), header_hash
        self._plain = b""
        self._number = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._plain and not self._ended:
            self._plain = self._next()
        count = min(len(target), len(self._plain))
        target[:count] = self._plain[:count]
        self._plain = self._plain[count:]
        return count

    def _next(self) -> bytes:
        prefix = self._source.read(_LENGTH.size)
        if len(prefix) < _LENGTH.size:
            raise BackupDamaged("The backup is incomplete: it ends before its last part.")
        (length,) = _LENGTH.unpack(prefix)
        sealed = self._source.read(length)
        if len(sealed) < length or length < _TAG or length > CHUNK + _TAG:
            raise BackupDamaged("The backup is incomplete or damaged.")
        for last in (False, True):
            try:
                plain = self._aead.decrypt(_nonce(self._number), sealed, _aad(self._hash, self._number, last))
            except InvalidTag:
                continue
            self._number += 1
            self._ended = last
            if last and self._source.read(1):
                raise BackupDamaged("The backup has data after its last part.")
            return plain
        raise BackupDamaged("The backup passphrase is wrong, or the backup was changed or damaged.")


class Digesting:
    """A backup file passed through while its SHA-256 is taken (the audit trail names a backup by
    it), so a large backup is not read a second time just to hash it."""

    def __init__(self, file: BinaryIO) -> None:
        self._file, self._sha = file, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._sha.update(data)
        return data

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        return self._file.write(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def write(out: BinaryIO | Digesting, header: BackupHeader, passphrase: str,
          members: Iterator[tuple[str, Path | bytes]]) -> None:
    """Seal ``members`` (name, file or bytes) as one backup into ``out``."""
    encoded = header.encode()
    out.write(MAGIC + _LENGTH.pack(len(encoded)) + encoded)
    writer = _SealingWriter(out, derive_kek(passphrase, header.kdf), hashlib.sha256(encoded).digest())
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            if isinstance(content, Path):
                tar.add(content, arcname=name, recursive=False)
            else:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(content), 0o600
                tar.addfile(info, io.BytesIO(content))
    writer.finish()


def new_header(vault_id: str, created: str, instances: int) -> BackupHeader:
    return BackupHeader(vault_id, created, instances, new_kdf())


def read_header(source: BinaryIO | Digesting) -> tuple[BackupHeader, bytes]:
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupDamaged("This is not a Custodian backup.")
    prefix = source.read(_LENGTH.size)
    (length,) = _LENGTH.unpack(prefix) if len(prefix) == _LENGTH.size else (0,)
    encoded = source.read(length) if 0 < length < 1 << 16 else b""
    try:
        doc = json.loads(encoded)
        header = BackupHeader(doc["vault_id"], doc["created"], int(doc["instances"]), dict(doc["kdf"]))
        # A hostile file must not make the key derivation take the machine's memory or hours.
        limits = {"time_cost": 10, "memory_cost": 1 << 20, "parallelism": 16}
        if header.kdf.get("name") != "argon2id" or not all(
                0 < int(str(header.kdf[name])) <= most for name, most in limits.items()):
            raise ValueError("key derivation outside what Custodian makes")
        # (base64 decoding fails with binascii.Error, a ValueError)
        if len(base64.b64decode(str(header.kdf["salt"]), validate=True)) < 16:
            raise ValueError("salt too short")
        return header, encoded
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupDamaged("The backup's header is damaged.") from exc


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """One regular file of the backup, under ``target`` and nowhere else, with our own mode
    (what tarfile's "data" filter does; it is missing from the Pythons before 3.11.4)."""
    relative = PurePosixPath(member.name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BackupDamaged("The backup names a file outside the vault's folder.")
    path = target.joinpath(*relative.parts)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = tar.extractfile(member)
    with open(path, "xb") as out:
        if content is not None:
            shutil.copyfileobj(content, out, CHUNK)


def extract(source: BinaryIO | Digesting, passphrase: str, target: Path,
            in_memory: frozenset[str] = frozenset()) -> tuple[BackupHeader, dict[str, bytes]]:
    """Open a backup into the empty folder ``target``; members named in ``in_memory`` (key
    material) are returned instead of written. Every part is checked before the restore uses it."""
    header, encoded = read_header(source)
    reader = io.BufferedReader(_OpeningReader(source, derive_kek(passphrase, header.kdf),
                                              hashlib.sha256(encoded).digest()), CHUNK)
    kept: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    raise BackupDamaged("The backup holds something other than vault files.")
                if member.name in in_memory:
                    content = tar.extractfile(member)
                    kept[member.name] = content.read() if content else b""
                else:
                    _write_member(tar, member, target)
        while reader.read(CHUNK):  # the end of the tar is not the end of the backup: check it all
            pass
    except tarfile.TarError as exc:
        raise BackupDamaged("The backup's contents are damaged.") from exc
    return header, kept
