"""The index's schema: the tables of a new vault and the steps that bring an older one up to date.

Kept apart from the connection code so that each release's step is a few lines here, and a concern
with tables of its own (audit_lookup) keeps their text in its own module.
"""

from __future__ import annotations

from app.store import audit_lookup, key_images, manifest, protocol_book, study_totals

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
    # Each study's instance count and bytes, kept by triggers (app/store/study_totals.py): the study
    # list and the cache budget read one row per study instead of every instance.
    22: study_totals.MIGRATION,
    # Hanging protocols as definitions, the site's and each user's (app/store/protocol_book.py).
    23: protocol_book.MIGRATION,
    # A reader's key images, marked while reading (app/store/key_images.py).
    24: key_images.MIGRATION,
    # The audit message of every receive or import names its studies' SOP classes with their counts:
    # from an index alone, not a fetch of every instance row of the study at each C-STORE.
    25: "CREATE INDEX IF NOT EXISTS instances_study_class ON instances(study_uid, sop_class);",
}
SCHEMA_VERSION = max(MIGRATIONS)
