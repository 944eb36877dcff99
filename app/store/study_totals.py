"""Each study's instance count and bytes, kept by the index itself as instances come and go.

The study list shows each study's number of instances and the cache budget weighs each study's
bytes; counting and summing the instance rows made both grow with every image kept (1.7 s and
2.1 s at five million instances). Triggers keep one narrow row per study in step within the very
statement that inserts, moves or deletes an instance, whatever code path writes it (import,
receive, retrieve, eviction, shredding), so the two read one row per study instead.

The whole list also reads, through a covering index in its own order, only the columns it shows of
each study: not the study rows themselves (each carries its 2 KB manifest), nor a sort of them.

An instance row replaced by ``INSERT OR REPLACE`` would be counted twice: SQLite fires no delete
trigger for a replaced row unless recursive triggers are on. No code replaces instance rows.
"""

from __future__ import annotations

# Schema step: the table, filled from the instances already kept (once, at the upgrade, through the
# covering index of migration 21), the triggers that keep it from then on, and the list's own index.
MIGRATION = """
CREATE TABLE IF NOT EXISTS study_totals (
    study_uid TEXT PRIMARY KEY,
    instances INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR REPLACE INTO study_totals (study_uid, instances, bytes)
    SELECT study_uid, count(*), sum(size) FROM instances GROUP BY study_uid;
CREATE TRIGGER IF NOT EXISTS study_totals_add AFTER INSERT ON instances BEGIN
    INSERT INTO study_totals (study_uid, instances, bytes) VALUES (NEW.study_uid, 1, NEW.size)
        ON CONFLICT (study_uid) DO UPDATE SET instances = instances + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS study_totals_remove AFTER DELETE ON instances BEGIN
    UPDATE study_totals SET instances = instances - 1, bytes = bytes - OLD.size
        WHERE study_uid = OLD.study_uid;
END;
CREATE TRIGGER IF NOT EXISTS study_totals_move AFTER UPDATE OF study_uid, size ON instances BEGIN
    UPDATE study_totals SET instances = instances - 1, bytes = bytes - OLD.size
        WHERE study_uid = OLD.study_uid;
    INSERT INTO study_totals (study_uid, instances, bytes) VALUES (NEW.study_uid, 1, NEW.size)
        ON CONFLICT (study_uid) DO UPDATE SET instances = instances + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS study_totals_gone AFTER DELETE ON studies BEGIN
    DELETE FROM study_totals WHERE study_uid = OLD.uid;
END;
CREATE INDEX IF NOT EXISTS studies_listed
    ON studies(study_date DESC, study_time DESC, uid, patient, description, accession);
"""

# A study's count and bytes beside its row of ``studies s`` (zero for a study without instances).
JOIN = "LEFT JOIN study_totals t ON t.study_uid = s.uid"
INSTANCES = "coalesce(t.instances, 0)"
BYTES = "coalesce(t.bytes, 0)"
