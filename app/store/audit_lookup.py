"""Which audit records name each patient: the lookup behind a patient access report.

A record names its patients inside its JSON, which no SQLite index reaches, so finding one
patient's records read and parsed the whole trail (ten million records after a few busy years).
``audit_patients`` holds one row per (patient, record), written by the index itself as each
record goes in (a trigger: no code path can append without it) and, like the trail, never
changed. The hash chain does not cover it, so ``verify`` checks it against each record as it
walks the chain: a lookup row removed would hide an access from the report.
"""

from __future__ import annotations

# Schema step: the table, filled from the records already kept (once, at the upgrade). ``n`` is
# the patient's place in the record's list, so the lookup holds exactly what the records name.
MIGRATION = """
CREATE TABLE IF NOT EXISTS audit_patients (
    patient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (patient, seq, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_patients_seq ON audit_patients(seq, n);
INSERT OR IGNORE INTO audit_patients (patient, seq, n)
    SELECT j.value, a.seq, j.key FROM audit a, json_each(a.record, '$.patients') j;
CREATE TRIGGER IF NOT EXISTS audit_patients_fill AFTER INSERT ON audit BEGIN
    INSERT INTO audit_patients (patient, seq, n)
        SELECT value, NEW.seq, key FROM json_each(NEW.record, '$.patients');
END;
CREATE TRIGGER IF NOT EXISTS audit_patients_update BEFORE UPDATE ON audit_patients
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_patients_delete BEFORE DELETE ON audit_patients
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
"""

# The records of one patient (a clause of the trail's WHERE, one parameter).
OF_PATIENT = "seq IN (SELECT seq FROM audit_patients WHERE patient = ?)"

# The lookup in the order of the trail after a sequence number, for verify's walk
# (:class:`app.audit.log.AuditLog`; 0 for the whole trail).
IN_TRAIL_ORDER = "SELECT seq, patient FROM audit_patients WHERE seq > ? ORDER BY seq, n"
