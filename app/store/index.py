"""The SQLCipher index: connection setup and schema upgrades (the schema is in schema.py).

The whole database file (and its WAL) is encrypted page by page with the index key, so names,
UIDs and hashes never reach the disk in plaintext.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import sqlcipher3

from app.errors import CustodianError, NamesClash, UsageError, VaultLocked
from app.store import manifest
from app.store.faults import READ_ONLY, StorageFault, disk_fault
from app.store.schema import MIGRATIONS, NAMES_WITHOUT_CASE, SCHEMA, SCHEMA_VERSION

INDEX_FILE = "index.db"

# New indexes: 16 KiB pages and HMAC-SHA256 per page decrypt about twice as fast as SQLCipher 4's
# 4 KiB / HMAC-SHA512 on CPUs with SHA extensions (the audit chain is read end to end on every
# verify); both stay AES-256 with an authenticated page each. Kept in the key store per vault.
NEW_INDEX_CIPHER: dict[str, object] = {"cipher_page_size": 16384, "cipher_hmac_algorithm": "HMAC_SHA256"}
_CIPHER_SETTINGS: dict[str, set[int] | set[str]] = {
    "cipher_page_size": {1024, 4096, 8192, 16384, 32768, 65536},
    "cipher_hmac_algorithm": {"HMAC_SHA1", "HMAC_SHA256", "HMAC_SHA512"}}


def health(conn: sqlcipher3.Connection) -> tuple[list[str], str, int, datetime | None]:
    """SQLCipher's page authentication failures, SQLite's quick check ("ok" when clean), the
    schema version and the audit trail's newest time."""
    schema = conn.execute("PRAGMA user_version").fetchone()[0]
    cipher = [str(row[0]) for row in conn.execute("PRAGMA cipher_integrity_check")]
    try:
        quick = "; ".join(str(row[0]) for row in conn.execute("PRAGMA quick_check"))
        newest = conn.execute("SELECT at FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlcipher3.DatabaseError as exc:  # a damaged page stops SQLite's own walk
        return cipher, f"the index cannot be read through ({type(exc).__name__})", schema, None
    return cipher, quick, schema, datetime.fromisoformat(newest[0]) if newest else None


def connect(home: Path, index_key: bytes, *, create: bool = False,
            cipher: Mapping[str, object] | None = None, renames: Mapping[str, str] | None = None
            ) -> sqlcipher3.Connection:
    """The index, upgraded to this release's schema. ``renames`` (old user name -> new) are made as
    part of the upgrade to names without case, the one way past its refusal (:class:`NamesClash`)."""
    path = home / INDEX_FILE
    if not create and not path.exists():
        raise CustodianError("The vault's index is missing.")
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA cipher_log_level = NONE")  # failures reach the user as our own plain message
    conn.execute(f"PRAGMA key = \"x'{index_key.hex()}'\"")
    for name, value in (cipher or {}).items():
        if value not in _CIPHER_SETTINGS.get(name, ()):
            conn.close()
            raise CustodianError("The vault's key store names an index setting this release cannot use.")
        conn.execute(f"PRAGMA {name} = {value}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError as exc:
        conn.close()
        if not os.access(home, os.W_OK):  # SQLite cannot open its journal: not a key problem
            raise StorageFault("The vault could not be opened", READ_ONLY) from None
        raise VaultLocked("The vault's index could not be opened with this key.") from exc
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed import or audit event survives power loss, not just a crash.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    manifest.register(conn)
    if create:
        conn.executescript("BEGIN;" + SCHEMA + "PRAGMA user_version = 1; COMMIT;")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise CustodianError(
            f"The vault's index has schema version {version}; this release reads up to {SCHEMA_VERSION}."
        )
    # Foreign keys are enforced from here on: a step that rebuilds a table (SQLite cannot change
    # a constraint in place) drops the old one while other tables still refer to it.
    if renames and version >= NAMES_WITHOUT_CASE:
        conn.close()
        raise UsageError("This vault's user names need no renaming to open it: an administrator renames "
                         "a user with 'custodian user rename' after logging in.")
    try:
        for step in range(version + 1, SCHEMA_VERSION + 1):
            if step == NAMES_WITHOUT_CASE:
                _names_without_case(conn, renames or {})
            else:
                conn.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step}; COMMIT;")
    except BaseException:
        conn.close()
        raise
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _names_without_case(conn: sqlcipher3.Connection, renames: Mapping[str, str]) -> None:
    """Migration 19 in one transaction: the renames asked for, then a refusal that names the user
    names still differing only in case (two accounts are never merged into one), then the step."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for old, new in renames.items():
            try:
                renamed = conn.execute("UPDATE users SET name = ? WHERE name = ?", (new, old)).rowcount
            except sqlcipher3.IntegrityError:
                raise UsageError(f"A user named '{new}' already exists.") from None
            if renamed != 1:
                raise UsageError(f"There is no user named '{old}' to rename.")
        clashes = [row[0] for row in conn.execute(
            "SELECT group_concat(name, ' and ') FROM (SELECT name FROM users ORDER BY name) "
            "GROUP BY lower(name) HAVING count(*) > 1 ORDER BY lower(name)")]
        if clashes:
            raise NamesClash(
                "The vault was not upgraded: user names that differ only in case belong to different "
                f"accounts ({'; '.join(clashes)}), and from this release on they would be one name. Nothing "
                "was merged or changed. Rename one account of each with 'custodian user rename NAME "
                "NEW-NAME' (--also NAME NEW-NAME for each other), run by whoever opens the vault (its "
                "passphrase or keyring, or the service's account); the upgrade then goes on.")
        for statement in filter(str.strip, MIGRATIONS[NAMES_WITHOUT_CASE].split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {NAMES_WITHOUT_CASE}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def write_transaction(conn: sqlcipher3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock at once, so no reader upgrades into a deadlock), then
    COMMIT, or ROLLBACK when anything fails (a COMMIT refused by a full disk included); a disk
    fault becomes a plain :class:`StorageFault`."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlcipher3.OperationalError as exc:
        why = disk_fault(exc)
        if why is None:
            raise
        raise StorageFault("The change could not be saved", why) from None
