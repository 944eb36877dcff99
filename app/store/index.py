"""The SQLCipher index: schema and connection setup.

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
from app.store import audit_lookup, manifest
from app.store.faults import READ_ONLY, StorageFault, disk_fault

INDEX_FILE = "index.db"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret TEXT NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE recovery_codes (
    user_id INTEGER NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at REAL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    expires_at REAL NOT NULL,
    ended_at REAL
);

CREATE TABLE data_keys (
    id INTEGER PRIMARY KEY,
    context TEXT NOT NULL UNIQUE,   -- 'study/<uid>' or 'quarantine'
    kid TEXT NOT NULL,
    wrapped BLOB NOT NULL
);

CREATE TABLE patients (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '',
    sex TEXT NOT NULL DEFAULT '',
    UNIQUE (patient_id, issuer)
);
CREATE TABLE studies (
    uid TEXT PRIMARY KEY,
    patient INTEGER NOT NULL REFERENCES patients(id),
    key_id INTEGER NOT NULL REFERENCES data_keys(id),
    study_date TEXT NOT NULL DEFAULT '',
    study_time TEXT NOT NULL DEFAULT '',
    accession TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    referring TEXT NOT NULL DEFAULT '',
    manifest_sha256 TEXT NOT NULL DEFAULT '',
    imported_at REAL NOT NULL
);
CREATE INDEX studies_patient ON studies(patient);
CREATE TABLE series (
    uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(uid),
    modality TEXT NOT NULL DEFAULT '',
    number INTEGER,
    description TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    frame_of_reference TEXT NOT NULL DEFAULT ''
);
CREATE INDEX series_study ON series(study_uid);
CREATE TABLE instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(uid),
    study_uid TEXT NOT NULL REFERENCES studies(uid),
    sop_class TEXT NOT NULL,
    number INTEGER,
    blob TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    rows INTEGER,
    columns INTEGER,
    frames INTEGER,
    samples INTEGER,
    bits_allocated INTEGER,
    bits_stored INTEGER,
    pixel_representation INTEGER,
    photometric TEXT,
    rescale_slope REAL,
    rescale_intercept REAL,
    window_center REAL,
    window_width REAL,
    pixel_spacing TEXT,
    position TEXT,
    orientation TEXT,
    pixel_offset INTEGER,
    imported_at REAL NOT NULL
);
CREATE INDEX instances_series ON instances(series_uid);
CREATE INDEX instances_study ON instances(study_uid);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY,
    blob TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""
NAMES_WITHOUT_CASE = 19
# Each step moves the schema up one version; a new index runs them all after SCHEMA.
MIGRATIONS: dict[int, str] = {
    2: """
    ALTER TABLE users ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN locked_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN enrolled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN inactivity_seconds INTEGER;
    ALTER TABLE sessions ADD COLUMN needs_enrolment INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE patients ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE break_glass (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        patient INTEGER NOT NULL REFERENCES patients(id),
        reason TEXT NOT NULL,
        granted_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    3: """
    ALTER TABLE audit ADD COLUMN message TEXT NOT NULL DEFAULT '';
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        head_hash TEXT NOT NULL,
        at TEXT NOT NULL,
        signature BLOB NOT NULL
    );
    """,
    # The anomaly rules look back over one user's recent events: without this they would scan
    # six years of trail on every image opened.
    4: """
    CREATE INDEX audit_user_type_at ON audit(
        json_extract(record, '$.user'), json_extract(record, '$.type'), at);
    """,
    # The person behind an account, for the rule that flags opening a patient of one's own surname.
    5: """
    ALTER TABLE users ADD COLUMN full_name TEXT NOT NULL DEFAULT '';
    """,
    # Audit records are kept for six years and never changed: the index itself refuses, so no
    # code path can do it by mistake (someone holding the key can drop these; the hash chain and
    # the signed checkpoints are what catch that).
    6: """
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    """,
    7: """
    CREATE TABLE nodes (name TEXT PRIMARY KEY, config TEXT NOT NULL);
    """,
    # Sends waiting for a PACS that was down: they go out when it is back.
    8: """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        done_at REAL
    );
    """,
    # The cache budget evicts least recently opened studies the PACS holds; a reader can pin one.
    9: """
    ALTER TABLE studies ADD COLUMN last_opened REAL;
    ALTER TABLE studies ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE studies ADD COLUMN at_pacs INTEGER NOT NULL DEFAULT 0;
    """,
    # Storage commitment requests waiting for the PACS's report.
    10: """
    CREATE TABLE commitments (
        transaction_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        node TEXT NOT NULL,
        instances INTEGER NOT NULL,
        requested_at REAL NOT NULL,
        reported_at REAL,
        committed INTEGER,
        failed INTEGER
    );
    """,
    # Disclosures on media (HIPAA accounting) and business associate agreements. Disclosures are
    # never deleted and, once settled (made or abandoned), never changed.
    11: """
    CREATE TABLE disclosures (
        id INTEGER PRIMARY KEY,
        serial TEXT NOT NULL UNIQUE,
        at REAL NOT NULL,
        user TEXT NOT NULL,
        recipient_kind TEXT NOT NULL,
        recipient TEXT NOT NULL,
        purpose TEXT NOT NULL,
        authorization TEXT NOT NULL,
        identity_check TEXT NOT NULL,
        delivery TEXT NOT NULL,
        media TEXT NOT NULL,
        label TEXT NOT NULL,
        instances INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        deidentified INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'made', 'abandoned')),
        out TEXT NOT NULL
    );
    CREATE TABLE disclosed_studies (
        disclosure INTEGER NOT NULL REFERENCES disclosures(id),
        study_uid TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        patient_name TEXT NOT NULL,
        study_date TEXT NOT NULL,
        description TEXT NOT NULL
    );
    CREATE INDEX disclosed_patient ON disclosed_studies(patient_id);
    CREATE TRIGGER disclosures_kept BEFORE DELETE ON disclosures
        BEGIN SELECT RAISE(ABORT, 'disclosures are kept'); END;
    CREATE TRIGGER disclosed_studies_kept BEFORE DELETE ON disclosed_studies
        BEGIN SELECT RAISE(ABORT, 'disclosures are kept'); END;
    CREATE TRIGGER disclosed_studies_fixed BEFORE UPDATE ON disclosed_studies
        BEGIN SELECT RAISE(ABORT, 'disclosures are kept'); END;
    CREATE TRIGGER disclosures_settled BEFORE UPDATE ON disclosures
        WHEN OLD.state != 'pending' OR NEW.id != OLD.id OR NEW.serial != OLD.serial OR NEW.at != OLD.at
             OR NEW.recipient != OLD.recipient OR NEW.sha256 != OLD.sha256
        BEGIN SELECT RAISE(ABORT, 'a settled disclosure is not changed'); END;
    CREATE TABLE agreements (
        recipient TEXT PRIMARY KEY COLLATE NOCASE,
        reference TEXT NOT NULL,
        effective TEXT NOT NULL,
        expires TEXT NOT NULL,
        revoked INTEGER NOT NULL,
        revoked_reason TEXT NOT NULL,
        changed_by TEXT NOT NULL,
        changed_at REAL NOT NULL
    );
    """,
    # Whether displaying an instance needs its header (LUT sequences, palette, overlays...);
    # NULL for instances imported before: their header is read, which is always correct.
    12: """
    ALTER TABLE instances ADD COLUMN needs_header INTEGER;
    """,
    # Each reader's own measurements and annotations, kept when the cache evicts the study (it
    # may be fetched again) and destroyed with it when it is shredded.
    13: """
    CREATE TABLE measurements (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        frame INTEGER NOT NULL,
        kind TEXT NOT NULL,
        points TEXT NOT NULL,
        text TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX measurements_series ON measurements(user, series_uid);
    """,
    # One position per frame of an enhanced multi-frame image (from its functional groups), so
    # its frames are ordered, synchronised and stacked in 3D by where they lie; NULL otherwise.
    14: """
    ALTER TABLE instances ADD COLUMN frame_positions TEXT;
    """,
    # The study manifest becomes a set hash that grows with each stored instance (see
    # app/store/manifest.py) instead of a hash over the sorted list, recomputed in full each time.
    15: f"""
    ALTER TABLE studies ADD COLUMN manifest BLOB;
    UPDATE studies SET manifest = {manifest.OF_STUDY_ROWS};
    ALTER TABLE studies DROP COLUMN manifest_sha256;
    """,
    # Patient records keyed by Patient ID, Issuer and an anchor: '' for the record an ID names, a
    # study's UID for a study without a Patient ID or whose name or birth date differ from the
    # record its ID names (app/store/patients.py). Existing vaults are re-derived from their
    # instances when they are next opened (they need the data keys): 'patients_rederive'.
    16: """
    CREATE TABLE patients_new (
        id INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL DEFAULT '',
        birth_date TEXT NOT NULL DEFAULT '',
        sex TEXT NOT NULL DEFAULT '',
        restricted INTEGER NOT NULL DEFAULT 0,
        anchor TEXT NOT NULL DEFAULT '',
        UNIQUE (patient_id, issuer, anchor)
    );
    INSERT INTO patients_new (id, patient_id, issuer, name, birth_date, sex, restricted)
        SELECT id, patient_id, issuer, name, birth_date, sex, restricted FROM patients;
    DROP TABLE patients;
    ALTER TABLE patients_new RENAME TO patients;
    INSERT INTO meta (key, value) SELECT 'patients_rederive', 'pending' WHERE EXISTS (SELECT 1 FROM studies);
    """,
    # Service mode: a session is bound to the OS account of the connection that logged in.
    17: """
    ALTER TABLE sessions ADD COLUMN peer_uid INTEGER;
    """,
    # Step-up codes count toward the lockout and a lock ends the account's sessions, with the reason
    # it says later; a wrong step-up code holds the account's next one back for a while.
    18: """
    ALTER TABLE sessions ADD COLUMN ended_reason TEXT;
    ALTER TABLE users ADD COLUMN step_up_after REAL NOT NULL DEFAULT 0;
    """,
    # Wrong passwords at the login screen, which anyone may type, are counted and lock the account
    # apart from wrong codes inside a session (those of 18, which end its sessions); user names are
    # one name whatever their case (NOCASE is exact for them: they are ASCII). Run by
    # _names_without_case, which refuses, naming them, names that differ only in case.
    NAMES_WITHOUT_CASE: """
    ALTER TABLE users ADD COLUMN login_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN login_locked_until REAL NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX IF NOT EXISTS users_name_nocase ON users (name COLLATE NOCASE);
    """,
    # Directory accounts: a directory user's row on this station names its entry, when the directory
    # last confirmed the user (live sessions are re-checked from then) and last checked the password
    # (the offline window runs from then; the password hash is the cached verifier); a session opened
    # while the directory could not be reached is marked offline.
    20: """
    ALTER TABLE users ADD COLUMN directory_dn TEXT;
    ALTER TABLE users ADD COLUMN directory_checked_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN directory_login_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN offline INTEGER NOT NULL DEFAULT 0;
    """,
    # What grows with the vault, found without reading every row: a patient's audit records through a
    # lookup the index keeps (app/store/audit_lookup.py); the cache's sizes (the budget sums them) from
    # an index alone, which serves every lookup of a study's instances the old one did.
    21: audit_lookup.MIGRATION + """
    CREATE INDEX IF NOT EXISTS instances_study_size ON instances(study_uid, size);
    DROP INDEX IF EXISTS instances_study;
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)


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
