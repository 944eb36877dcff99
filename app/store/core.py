"""The storage engine: the index connection, transactions, the write lock, data keys and blobs.

It knows no users, sessions or roles; only the gate (:mod:`app.vault.gate`) holds one and hands
it out, after its checks, to the services behind it. Writers (import, shred, key rotation, backup)
hold a file lock; readers in other processes keep working through SQLite's WAL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlcipher3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.atomicfile import write_durable
from app.errors import BusyError, CustodianError, UsageError, VaultLocked, VaultNotFound
from app.security.keys import KEYSTORE_FILE, WHERE, Keys, KeyStore, PassphraseSource, derive, keyring_usable
from app.security.sealing import SEALED_MODES, Sealer, SigningKey, open_sealer
from app.store import index
from app.store.blobs import BlobDamaged, BlobStore, instance_aad, seal, unseal
from app.store.books import MetaBook
from app.store.patients import REFERENCE_SQL
from app.store.staging import sweep_staging

AUDIT_SIGNING_CONTEXT = "audit-signing"
TOKEN_SIGNER_KEY = "audit_signing_key"  # meta: the token holding the checkpoint key, when one does
LOCK_FILE = "write.lock"
OPEN_FILE = "open.lock"  # every process with the vault open holds it shared
TOKEN_FILE = "session.bin"
QUARANTINE_CONTEXT = "quarantine"
Row = tuple[Any, ...]  # a row of the index: SQLite's values carry no static type


def study_context(study_uid: str) -> str:
    """The data key context of a study: one key per study, so shredding one destroys one."""
    return f"study/{study_uid}"


@dataclass(frozen=True)
class StorageHealth:
    key_mode: str  # "keyring", "passphrase", "keyfile" or "pkcs11"
    cipher_errors: list[str]  # pages whose SQLCipher HMAC does not match
    quick_check: str  # "ok", or SQLite's findings
    schema: int
    newest_audit: datetime | None


@dataclass(frozen=True)
class Doomed:
    """A study about to be destroyed, as the audit event that must precede it needs it."""

    patient: str | None  # the patient's reference for the trail
    instances: int


@dataclass
class MasterMove:
    """A move of the master keys under another protection, as the audit record needs it."""

    source: str  # the key mode before
    target: str  # and after
    signer: SigningKey  # the new checkpoint key, in force once the move is committed
    committed: bool = False


class StoreCore:
    def __init__(self, home: Path, keystore: KeyStore, keys: Keys, conn: sqlcipher3.Connection) -> None:
        self.home = home
        self.keystore = keystore
        self.keys = keys
        self.conn = conn
        self.lock = threading.RLock()  # one thread at a time on ``conn``
        self.blobs = BlobStore(home)
        self._deks: dict[str, bytes] = {}
        self._open = os.open(home / OPEN_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        _flock(self._open, fcntl.LOCK_SH, "Another Custodian process is changing the vault's keys; try again "
                                          "when it has finished.")

    # ------------------------------------------------------------------ creation and opening
    @staticmethod
    def exists(home: Path) -> bool:
        return (home / KEYSTORE_FILE).exists()

    @classmethod
    def create(cls, home: Path, *, passphrase: str | None, use_keyring: bool | None,
               sealer: Sealer | None = None) -> StoreCore:
        """A new, empty store; its key store is saved by :meth:`finish_creation`, which is the
        moment the folder becomes a vault. With a ``sealer`` (a service vault) the master key is
        sealed by it, and neither the passphrase nor the keyring is used."""
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in (index.INDEX_FILE, index.INDEX_FILE + "-wal", index.INDEX_FILE + "-shm"):
            (home / leftover).unlink(missing_ok=True)  # from an init that was interrupted
        if sealer is not None:
            use_keyring, passphrase = False, None
        keystore, keys = KeyStore.create(home, passphrase=passphrase, sealer=sealer,
                                         use_keyring=keyring_usable() if use_keyring is None else use_keyring)
        keystore.index_cipher = dict(index.NEW_INDEX_CIPHER)
        return cls(home, keystore, keys, index.connect(home, keys.index_key, create=True,
                                                       cipher=keystore.index_cipher))

    def finish_creation(self) -> None:
        self.keystore.save()

    @classmethod
    def open(cls, home: Path, passphrase_source: PassphraseSource,
             renames: Mapping[str, str] | None = None) -> StoreCore:
        """``renames``: user names changed as the index is upgraded (see :func:`index.connect`)."""
        if not cls.exists(home):
            raise VaultNotFound(
                f"There is no vault in {home}: run 'custodian init --admin NAME' to make one."
            )
        keystore = KeyStore.load(home)
        keys = keystore.unlock(passphrase_source)
        try:
            conn = index.connect(home, keys.index_key, cipher=keystore.index_cipher, renames=renames)
        except VaultLocked:
            staged = keystore.staged_index_key(keys)
            if staged is None:
                raise
            conn = index.connect(home, staged, cipher=keystore.index_cipher,  # renewed, not yet settled
                                 renames=renames)
            keystore.settle_index_key(keys, staged)
        if keystore.pending_index:  # the renewal never reached the index: the key in use stays
            keystore.settle_index_key(keys, keys.index_key)
        return cls(home, keystore, keys, conn)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
        self._deks.clear()
        if self._open >= 0:  # (closing twice is harmless, as for the connection)
            os.close(self._open)
            self._open = -1

    @property
    def key_mode(self) -> str:
        return self.keystore.mode

    def health(self) -> StorageHealth:
        with self.lock:
            cipher, quick, schema, newest = index.health(self.conn)
        return StorageHealth(self.key_mode, cipher, quick, schema, newest)

    # ------------------------------------------------------------------ the index
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlcipher3.Connection]:
        with self.lock, index.write_transaction(self.conn):
            yield self.conn

    def query(self, sql: str, params: tuple[object, ...] | list[object] = ()) -> list[Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlcipher3.Connection]:
        """The connection, held for several reads that belong together."""
        with self.lock:
            yield self.conn

    @contextlib.contextmanager
    def write_lock(self, wait: float = 60.0) -> Iterator[None]:
        """The vault's writers, one at a time, across processes and threads (each holder opens the
        lock file anew: a second holder in this process waits too, so never take it twice). An
        import holds it per batch only; shred, key rotation and backup for their whole work."""
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd, fcntl.LOCK_EX, "Another Custodian process is writing to the vault; try again when it "
                                      "has finished.", wait)
            yield
        finally:
            os.close(fd)

    def reader(self) -> sqlcipher3.Connection:
        """A second connection for lookups that must not wait behind a writing transaction."""
        return index.connect(self.home, self.keys.index_key, cipher=self.keystore.index_cipher)

    # ------------------------------------------------------------------ keys and plaintext
    def data_key(self, context: str, new_keys: dict[str, bytes] | None = None) -> bytes:
        """The DEK for a study (or the quarantine); a new one waits in ``new_keys`` to be committed."""
        dek = self._deks.get(context) or (new_keys.get(context) if new_keys is not None else None)
        if dek is not None:
            return dek
        row = self.query("SELECT kid, wrapped FROM data_keys WHERE context = ?", (context,))
        if row:
            dek = self.keys.unwrap_data_key(row[0][0], row[0][1], context)
            self._deks[context] = dek
            return dek
        if new_keys is None:
            raise CustodianError("The study's data key is gone (the study was shredded).")
        dek = new_keys[context] = os.urandom(32)
        return dek

    def store_data_key(self, context: str, dek: bytes) -> None:
        """Keep a new data key, wrapped by the current master key; inside the caller's transaction."""
        kid, wrapped = self.keys.wrap_data_key(dek, context)
        self.conn.execute("INSERT INTO data_keys (context, kid, wrapped) VALUES (?, ?, ?)",
                          (context, kid, wrapped))

    def kept_data_key(self, context: str) -> bytes:
        """The data key of ``context``; a new one is kept in the index at once, in a short write
        under the lock, before anything is sealed with it: concurrent writers of one study then
        seal with the same key, whichever stored it."""
        new: dict[str, bytes] = {}
        dek = self.data_key(context, new)
        if not new:
            return dek
        with self.write_lock(), self.transaction() as conn:
            mine = conn.execute("SELECT 1 FROM data_keys WHERE context = ?", (context,)).fetchone() is None
            if mine:
                self.store_data_key(context, dek)
        if not mine:
            return self.data_key(context)
        self.remember_keys(new)
        return dek

    def remember_keys(self, keys: dict[str, bytes]) -> None:
        """Data keys a committed transaction stored, kept unwrapped for the next reads."""
        self._deks.update(keys)

    def plaintext(self, sop_uid: str, study_uid: str, blob_id: str) -> bytes:
        return unseal(self.data_key(study_context(study_uid)), self.blobs.read(blob_id),
                      instance_aad(sop_uid))

    def signing_key(self) -> SigningKey:
        """The workstation's Ed25519 key for audit checkpoints: in the PKCS#11 token that seals the
        master key (made there with the vault, never extractable), so that holding every file and
        key of the vault is not enough to re-sign a rewritten trail; else kept like a data key
        (wrapped). The index says which, so a move changes it in the same transaction as the
        checkpoints it signs again."""
        with self.reading() as conn:
            held = MetaBook(conn).get(TOKEN_SIGNER_KEY)
            wrapped = conn.execute("SELECT 1 FROM data_keys WHERE context = ?",
                                   (AUDIT_SIGNING_CONTEXT,)).fetchone()
        if held is not None:
            signer = open_sealer(self.home, json.loads(held)).signing_key(create=False)
            if signer is None:
                raise CustodianError("The index names a place for the audit signing key that holds none.")
            return signer
        if wrapped is None and self.key_mode in SEALED_MODES:
            sealer = self.keystore.sealing()
            signer = sealer.signing_key(create=True)
            if signer is not None:
                with self.transaction() as conn:
                    MetaBook(conn).put(TOKEN_SIGNER_KEY, _signer_record(sealer, signer))
                return signer
        new: dict[str, bytes] = {}
        seed = self.data_key(AUDIT_SIGNING_CONTEXT, new)
        if new:
            with self.transaction():
                self.store_data_key(AUDIT_SIGNING_CONTEXT, seed)
            self._deks[AUDIT_SIGNING_CONTEXT] = seed
        return Ed25519PrivateKey.from_private_bytes(seed)

    @contextlib.contextmanager
    def rotation(self, passphrase: str | None) -> Iterator[int]:
        """New keys for everything but the images: a new index key (the index re-encrypted under
        it), then a new master key that re-wraps it and every data key. Yields the number of data
        keys inside the transaction, for the audit event. Only while no other process has the
        vault open (they would keep the old keys)."""
        with self.write_lock(), self._alone():
            token = self.load_token()  # sealed under the index key: sealed again under the new one
            self._renew_index_key()
            if token is not None:
                self.save_token(token)
            new_kid = self.keystore.begin_rotation(self.keys, passphrase)
            with self.transaction() as conn:
                rows = conn.execute("SELECT id, context, kid, wrapped FROM data_keys").fetchall()
                for key_id, context, kid, wrapped in rows:
                    dek = self.keys.unwrap_data_key(kid, wrapped, context)
                    conn.execute("UPDATE data_keys SET kid = ?, wrapped = ? WHERE id = ?",
                                 (*self.keys.wrap_data_key(dek, context, kid=new_kid), key_id))
                yield len(rows)
            self.keystore.finish_rotation(self.keys, new_kid)

    def _renew_index_key(self) -> None:
        """SQLCipher re-encrypts every page of the index in one transaction (outside WAL mode,
        which cannot re-key): a crash leaves it whole under the old key or the new one, and the
        key store, which staged the new key first, holds both until it is settled."""
        index_key = os.urandom(32)
        self.keystore.stage_index_key(self.keys, index_key)
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("PRAGMA journal_mode = DELETE")
            try:
                self.conn.execute(f"PRAGMA rekey = \"x'{index_key.hex()}'\"")
            finally:
                self.conn.execute("PRAGMA journal_mode = WAL")
        self.keystore.settle_index_key(self.keys, index_key)

    @contextlib.contextmanager
    def master_move(self, sealer: Sealer) -> Iterator[MasterMove]:
        """Every master key sealed again under ``sealer`` (a token, a key file), with a new audit
        checkpoint key where it now belongs: made in the token, or a new one wrapped in the index.
        Yields inside the transaction that puts the new checkpoint key in force, for the caller to
        sign the checkpoints again and record the move. The index commits first, then the key
        store, then what protected the master before is destroyed: an interruption anywhere leaves
        a vault that opens. Only while no other process has the vault open (it would go on signing
        with the old checkpoint key)."""
        if sealer.mode == self.key_mode:
            raise UsageError(f"The master key is already {WHERE[sealer.mode]}.")
        with self.write_lock(), self._alone():
            sealer.provision(self.home, self.keys.vault_id)
            sealed = self.keystore.resealed(self.keys.masters, sealer)
            signer, seed = sealer.signing_key(create=True), None
            if signer is None:
                seed = os.urandom(32)
                signer = Ed25519PrivateKey.from_private_bytes(seed)
            move = MasterMove(self.key_mode, sealer.mode, signer)
            with self.transaction() as conn:
                yield move
                conn.execute("DELETE FROM data_keys WHERE context = ?", (AUDIT_SIGNING_CONTEXT,))
                self._deks.pop(AUDIT_SIGNING_CONTEXT, None)
                if seed is None:
                    MetaBook(conn).put(TOKEN_SIGNER_KEY, _signer_record(sealer, signer))
                else:
                    MetaBook(conn).delete(TOKEN_SIGNER_KEY)
                    self.store_data_key(AUDIT_SIGNING_CONTEXT, seed)
            move.committed = True
            if seed is not None:
                self._deks[AUDIT_SIGNING_CONTEXT] = seed
            self.keystore.move_to(sealer, sealed)

    def change_passphrase(self, passphrase: str) -> None:
        """The master keys wrapped under a new passphrase (passphrase mode only)."""
        with self.write_lock():
            self.keystore.change_passphrase(self.keys, passphrase)

    @contextlib.contextmanager
    def _alone(self) -> Iterator[None]:
        """This process alone has the vault open (its shared open lock upgraded for the duration)."""
        try:
            fcntl.flock(self._open, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError("Custodian is open in another program (the workstation, the storage SCP or "
                            "another command): close it there first, then try again.") from None
        try:
            yield
        finally:
            fcntl.flock(self._open, fcntl.LOCK_SH)

    # ------------------------------------------------------------------ removing
    def sweep(self) -> int:
        """Remove blobs left by an interrupted import (they were never indexed), and the staging
        folders of imports that have ended; a live import's staged blobs stay. Needs the lock."""
        rows = self.query("SELECT blob FROM instances UNION ALL SELECT blob FROM quarantine")
        return self.blobs.sweep({r[0] for r in rows}) + sweep_staging(self.home)

    @contextlib.contextmanager
    def destroying(self, study_uid: str, *, forget_measurements: bool = False) -> Iterator[Doomed]:
        """Destroy a study irrecoverably: its data key, then its blobs and index rows. Yields,
        inside the transaction and before anything goes, what the audit event must name."""
        from app.store import key_images
        from app.store.patients import PatientBook

        with self.write_lock():
            blobs = [r[0] for r in self.query("SELECT blob FROM instances WHERE study_uid = ?", (study_uid,))]
            with self.transaction() as conn:
                row = conn.execute("SELECT patient FROM studies WHERE uid = ?", (study_uid,)).fetchone()
                if row is None:
                    raise CustodianError("This study is not in the cache.")
                pid = conn.execute(f"SELECT {REFERENCE_SQL} FROM patients p WHERE id = ?", row).fetchone()
                yield Doomed(pid[0] if pid else None, len(blobs))
                conn.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,))
                if forget_measurements:
                    conn.execute("DELETE FROM measurements WHERE study_uid = ?", (study_uid,))
                    conn.execute(key_images.FORGET_STUDY, (study_uid,))
                conn.execute("DELETE FROM series WHERE study_uid = ?", (study_uid,))
                conn.execute("DELETE FROM studies WHERE uid = ?", (study_uid,))
                conn.execute("DELETE FROM data_keys WHERE context = ?", (study_context(study_uid),))
                PatientBook(conn).drop_if_unused(row[0])
            self._deks.pop(study_context(study_uid), None)
            with self.lock:
                # Old page images holding the data key must not linger in the WAL.
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for blob_id in blobs:
                self.blobs.delete(blob_id)

    # ------------------------------------------------------------------ the CLI's session file
    # The CLI keeps its session token between commands in a file sealed with a key derived from
    # the index key, and bound to this OS account, this machine and this folder: a copied home, or
    # the file read by another account, holds no session (the program says "Not logged in").
    def save_token(self, token: str) -> None:
        write_durable(self.home / TOKEN_FILE, seal(self._token_key(), token.encode(), self._token_aad()))

    def load_token(self) -> str | None:
        try:
            sealed = (self.home / TOKEN_FILE).read_bytes()
            return unseal(self._token_key(), sealed, self._token_aad()).decode()
        except (OSError, BlobDamaged):
            return None

    def _token_key(self) -> bytes:
        return derive(self.keys.index_key, "custodian/session-file")

    def _token_aad(self) -> bytes:
        owner = (self.keys.vault_id, str(os.getuid()), machine_id(), str(self.home.resolve()))
        return "/".join(owner).encode()

    def clear_token(self) -> None:
        (self.home / TOKEN_FILE).unlink(missing_ok=True)


def _flock(fd: int, kind: int, busy: str, wait: float = 60.0) -> None:
    """Take ``kind`` of lock on ``fd``, waiting up to ``wait`` seconds; BusyError saying ``busy``."""
    deadline, pause = time.monotonic() + wait, 0.002
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise BusyError(busy) from None
            time.sleep(pause)  # soon at first: an import holds the write lock for a batch's commit only
            pause = min(pause * 2, 0.1)


def machine_id() -> str:
    """This machine's identity as systemd keeps it (empty where there is none)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            return Path(path).read_text().strip()
    return ""


def _signer_record(sealer: Sealer, signer: SigningKey) -> str:
    """Where the checkpoint key is, with its public half: a restore without that token retires
    it (app/store/contingency.py) and can still verify what it signed."""
    return json.dumps({**sealer.describe(), "public": signer.public_key().public_bytes_raw().hex()})
