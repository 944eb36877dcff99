"""What grows with the vault is found through indexes, never by reading the whole trail or every
instance (a busy station's vault holds millions of both): a patient's audit records and studies,
each study's instance count and bytes (the study list and the cache budget). The lookup behind the
access report and the studies' totals are kept by the index itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlcipher3

from app.audit.events import AuditEvent, EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.security.roles import Role
from app.store import index
from app.store.books import CacheBook, StudyBook
from tests.conftest import VaultEnv, study_bytes


def plans(conn: sqlcipher3.Connection, run: Callable[[], object]) -> dict[str, str]:
    """Each statement ``run`` executes (parameters bound) and its query plan, one line per step."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return {sql: "\n".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements if sql.lstrip().upper().startswith("SELECT")}


def _read(patient: str, n: int) -> AuditEvent:
    return AuditEvent(EventType.INSTANCES_READ, user="rad", studies=(f"1.2.{n}",), patients=(patient,))


@pytest.fixture
def trail(env: VaultEnv) -> VaultEnv:
    for n in range(6):
        env.vault._gate._record(_read("PID-A" if n % 2 else "PID-B", n))
    listed = AuditEvent(EventType.STUDY_LIST, user="rad", patients=("PID-A", "PID-B", "PID-A"))
    env.vault._gate._record(listed)
    return env


def test_a_patients_records_come_through_the_lookup_not_a_scan_of_the_trail(trail: VaultEnv) -> None:
    audit, conn = trail.vault._gate._audit, trail.vault._core.conn
    found = plans(conn, lambda: audit.records(AuditQuery(patient="PID-A", limit=None)))
    (plan,) = [p for sql, p in found.items() if "FROM audit " in sql]
    assert "audit_patients" in plan and "SCAN audit" not in plan, plan
    records = audit.records(AuditQuery(patient="PID-A", limit=None))
    assert [r.type for r in records] == ["query-local", "instances-accessed", "instances-accessed",
                                         "instances-accessed"]
    assert records[0].patients == ("PID-A", "PID-B", "PID-A")


def test_the_study_list_of_one_patient_reads_no_whole_table(env: VaultEnv) -> None:
    conn = env.vault._core.conn
    found = plans(conn, lambda: StudyBook(conn).listed("PID-A"))
    (plan,) = found.values()
    assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), plan


def _totals(env: VaultEnv, source: str) -> dict[str, tuple[int, int]]:
    return {uid: (n, size) for uid, n, size in env.vault._core.query(source)}


KEPT = "SELECT study_uid, instances, bytes FROM study_totals"
COUNTED = "SELECT study_uid, count(*), sum(size) FROM instances GROUP BY study_uid"


def test_each_studys_totals_stay_right_and_the_list_and_budget_read_no_instance(env: VaultEnv) -> None:
    tech, vault = env.login("tech"), env.vault
    a, b = (next(iter(vault.intake.import_bytes(tech, study_bytes(Patient(pid, "Test^P"), slices=6)).studies))
            for pid in ("PID-A", "PID-B"))
    vault.intake.import_bytes(tech, study_bytes(Patient("PID-A", "Test^P"), slices=2, study_uid=a))
    assert _totals(env, KEPT) == _totals(env, COUNTED) and _totals(env, KEPT)[a][0] == 8
    assert {s.study_uid: s.instances for s in vault.reading.studies(env.login("rad"))} == {a: 8, b: 6}
    conn = vault._core.conn
    book = CacheBook(conn)
    found = plans(conn, lambda: (StudyBook(conn).listed(), book.total(), book.usage(), book.evictable(0.0)))
    assert len(found) == 4 and not [p for p in found.values() if "instances" in p], found

    with vault._core.transaction() as held:  # held by the PACS, not opened for a month
        held.execute("UPDATE studies SET at_pacs = 1, last_opened = ? WHERE uid = ?", (time.time() - 3e6, a))
    vault.admin.set_policy(env.login("admin"), "cache_budget_mb", str(_totals(env, KEPT)[b][1] // 10**6 + 1))
    assert vault.cache.evict_to_budget(tech) == [a]
    assert _totals(env, KEPT) == _totals(env, COUNTED) == {b: _totals(env, COUNTED)[b]}
    env.add("privacy", Role.PRIVACY_OFFICER)
    vault.admin.shred(env.login("privacy"), b, "test")
    assert _totals(env, KEPT) == {} and book.usage().studies == 0


def test_an_imports_audit_message_counts_its_studys_instances_from_an_index_alone(env: VaultEnv) -> None:
    """Each receive's audit message names its study's SOP classes with their counts: read at every
    C-STORE, it must not fetch every instance row of a study that grows with each one."""
    vault, files = env.vault, study_bytes(Patient("PID-A", "Test^P"), slices=3)
    (study,) = vault.intake.import_bytes(env.login("tech"), files).studies
    event = AuditEvent(EventType.IMPORT, user="tech", studies=(study,))
    found = plans(vault._core.conn, lambda: vault._gate._audit.context(event))
    (plan,) = [p for sql, p in found.items() if "FROM instances" in sql]
    assert "COVERING INDEX" in plan, plan


KEY = bytes(range(32))


def _old_vault(home: Path, version: int) -> sqlcipher3.Connection:
    """An index as release ``version`` left it."""
    home.mkdir()
    conn = sqlcipher3.connect(str(home / index.INDEX_FILE), isolation_level=None)
    conn.execute(f"PRAGMA key = \"x'{KEY.hex()}'\"")
    index.manifest.register(conn)
    conn.executescript("BEGIN;" + index.SCHEMA + "PRAGMA user_version = 1; COMMIT;")
    for step in range(2, version + 1):
        conn.executescript(f"BEGIN; {index.MIGRATIONS[step]} PRAGMA user_version = {step}; COMMIT;")
    return conn


def test_the_lookup_refuses_changes_and_verify_finds_a_row_removed_or_added(trail: VaultEnv) -> None:
    audit = trail.vault._gate._audit
    assert audit.verify().ok
    for sql in ("UPDATE audit_patients SET patient = 'X'", "DELETE FROM audit_patients"):
        with pytest.raises(sqlcipher3.IntegrityError, match="append-only"), trail.vault._core.transaction():
            trail.vault._core.conn.execute(sql)
    (hidden,) = trail.vault._core.query("SELECT max(seq) FROM audit_patients WHERE patient = 'PID-B' "
                                        "AND n = 0")
    with trail.vault._core.transaction() as conn:  # an access hidden from the report, then one made up
        conn.execute("DROP TRIGGER audit_patients_delete")
        conn.execute("DELETE FROM audit_patients WHERE seq = ? AND n = 0", hidden)
        assert audit.verify().first_bad_seq == hidden[0]
        conn.execute("INSERT INTO audit_patients (patient, seq, n) VALUES ('PID-B', ?, 0)", hidden)
        assert audit.verify().ok
        conn.execute("INSERT INTO audit_patients (patient, seq, n) VALUES ('PID-C', 2, 0)")
        assert audit.verify().first_bad_seq == 2


def test_the_upgrade_fills_the_lookup_from_the_trail_already_kept(tmp_path: Path) -> None:
    home, key = tmp_path / "old", KEY
    conn = _old_vault(home, 20)
    conn.executemany("INSERT INTO audit (seq, at, record, prev_hash, hash) VALUES (?, 't', ?, '', '')",
                     [(1, '{"patients": ["P1", "P2"]}'), (2, '{"patients": []}')])
    conn.close()
    upgraded = index.connect(home, key)
    assert upgraded.execute("SELECT patient, seq, n FROM audit_patients ORDER BY n").fetchall() == [
        ("P1", 1, 0), ("P2", 1, 1)]
    upgraded.executescript(f"BEGIN; {index.MIGRATIONS[21]} COMMIT;")  # idempotent
    assert upgraded.execute("SELECT count(*) FROM audit_patients").fetchone() == (2,)
    upgraded.close()


def test_the_upgrade_counts_each_studys_instances_already_kept(tmp_path: Path) -> None:
    conn = _old_vault(tmp_path / "old", 21)
    conn.executemany("INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class, blob, size, sha256, "
                     "transfer_syntax, imported_at) VALUES (?, 'se', ?, 'c', ?, ?, '', 't', 0)",
                     [("1", "st1", "b1", 100), ("2", "st1", "b2", 20), ("3", "st2", "b3", 5)])
    conn.close()
    upgraded = index.connect(tmp_path / "old", KEY)
    assert upgraded.execute(KEPT + " ORDER BY study_uid").fetchall() == [("st1", 2, 120), ("st2", 1, 5)]
    upgraded.close()
