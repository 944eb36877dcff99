"""Backup and restore of a whole store (HIPAA 164.308(a)(7)(ii)(A)), in the format of
:mod:`app.store.backup`: what is written and read, not who may (that is the gate's)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlcipher3

from app.errors import CustodianError, UsageError, VaultExists
from app.security.keys import KEYSTORE_FILE, KeyStore, keyring_usable
from app.security.sealing import Sealer
from app.store import backup, index
from app.store.blobs import BLOB_DIR
from app.store.books import MetaBook, RetiredKeys
from app.store.core import TOKEN_SIGNER_KEY, StoreCore

BACKUP_MASTERS = "masters.json"  # inside the sealed backup only; never written out


@dataclass(frozen=True)
class BackupResult:
    path: Path
    instances: int  # blobs in the backup (instances and quarantined files)
    size: int
    sha256: str
    missing: int = 0  # blob files the index names but the disk no longer has ('verify' reports them)


@dataclass(frozen=True)
class Restored:
    core: StoreCore
    sha256: str
    made: str
    instances: int
    checkpoint_key_renewed: bool = False  # the backup's was in its token (see _own_checkpoint_key)


def write_backup(core: StoreCore, out: Path, passphrase: str) -> BackupResult:
    """The whole store as one encrypted file that opens on another machine with ``passphrase``.
    Writers wait while it is made, so what it holds is one consistent state; the file appears
    under its name only when complete."""
    backup.check_passphrase(passphrase)
    if out.exists():
        raise UsageError(f"{out} already exists; choose a new file name for the backup.")
    partial_out = out.with_name(out.name + ".part")
    with core.write_lock(), tempfile.TemporaryDirectory(dir=out.parent, prefix=".custodian-") as work:
        snapshot = Path(work)
        with core.lock:  # the online backup API copies a consistent state of the index
            target = index.connect(snapshot, core.keys.index_key, create=True,
                                   cipher=core.keystore.index_cipher)
            try:
                core.conn.backup(target)
                blobs = [b for b, in target.execute("SELECT blob FROM instances UNION ALL "
                                                    "SELECT blob FROM quarantine")]
            finally:
                target.close()
        # A blob file already missing is damage 'verify' reports; the backup keeps the rest.
        present = [b for b in blobs if core.blobs.path(b).exists()]
        masters = json.dumps({kid: base64.b64encode(key).decode()
                              for kid, key in core.keys.masters.items()}).encode()
        made = datetime.now(UTC).isoformat(timespec="seconds")
        header = backup.new_header(core.keystore.vault_id, made, len(present))
        members: Iterator[tuple[str, Path | bytes]] = itertools.chain(
            [(KEYSTORE_FILE, (core.home / KEYSTORE_FILE).read_bytes()), (BACKUP_MASTERS, masters),
             (index.INDEX_FILE, snapshot / index.INDEX_FILE)],
            ((f"{BLOB_DIR}/{b[:2]}/{b}", core.blobs.path(b)) for b in present))
        try:
            with partial_out.open("xb") as sink:
                digesting = backup.Digesting(sink)
                backup.write(digesting, header, passphrase, members)
                sink.flush()
                os.fsync(sink.fileno())
            partial_out.rename(out)
        except BaseException:
            partial_out.unlink(missing_ok=True)
            raise
    return BackupResult(out, len(present), out.stat().st_size, digesting.hexdigest(),
                        len(blobs) - len(present))


def restore_into(source: Path, home: Path, passphrase: str, *, vault_passphrase: str | None,
                 use_keyring: bool | None = None, sealer: Sealer | None = None) -> Restored:
    """A backup opened into ``home`` (which must hold no vault), its master keys protected on
    this machine (sealed by ``sealer`` when one is given), its index checked before anything is
    put in place."""
    if StoreCore.exists(home):
        raise VaultExists(f"There is already a vault in {home}; restore into an empty folder.")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if use_keyring is None and sealer is None:
        use_keyring = keyring_usable()
    with tempfile.TemporaryDirectory(dir=home, prefix=".restore-") as work, source.open("rb") as file:
        staged = Path(work)
        stream = backup.Digesting(file)  # extract reads it to the end: every byte is checked
        header, kept = backup.extract(stream, passphrase, staged, frozenset({BACKUP_MASTERS}))
        try:
            encoded = json.loads(kept[BACKUP_MASTERS])
            masters = {kid: base64.b64decode(key) for kid, key in encoded.items()}
            keystore = KeyStore.load(staged)
        except (KeyError, ValueError, CustodianError) as exc:
            raise backup.BackupDamaged("The backup's keys are missing or damaged.") from exc
        keystore.path = home / KEYSTORE_FILE  # (saved there last; a sealer keeps its files beside it)
        keys = keystore.adopt(masters, passphrase=vault_passphrase, use_keyring=bool(use_keyring),
                              sealer=sealer)
        conn = index.connect(staged, keys.index_key, cipher=keystore.index_cipher)
        try:
            cipher, quick, _, _ = index.health(conn)
            if cipher or quick != "ok":
                raise backup.BackupDamaged("The backup's index fails its integrity check; nothing was "
                                           "restored.")
            renewed = _own_checkpoint_key(conn)
        finally:
            conn.close()
        if (staged / BLOB_DIR).exists():
            (staged / BLOB_DIR).rename(home / BLOB_DIR)
        (staged / index.INDEX_FILE).rename(home / index.INDEX_FILE)
        keystore.save()  # last: the key store appearing is what makes the folder a vault
    core = StoreCore(home, keystore, keys, index.connect(home, keys.index_key, cipher=keystore.index_cipher))
    return Restored(core, stream.hexdigest(), header.created, header.instances, renewed)


def _own_checkpoint_key(conn: sqlcipher3.Connection) -> bool:
    """A backup whose audit checkpoint key is in its token, which stays with the machine it was
    made on (not extractable): the restored vault makes its own where its master key now is, and
    keeps the old key's public half to verify what it signed. True when renewed."""
    held = MetaBook(conn).get(TOKEN_SIGNER_KEY)
    if held is None:
        return False
    with index.write_transaction(conn):
        public = json.loads(held).get("public")
        if public:
            RetiredKeys(conn).retire(bytes.fromhex(public))
        MetaBook(conn).delete(TOKEN_SIGNER_KEY)
    return True
