"""What grows with the vault is found through indexes, never by reading the whole trail or every
instance (a busy station's vault holds millions of both): a patient's audit records and studies,
the cache's sizes. The lookup behind the access report is kept by the index itself and checked by
verify."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlcipher3

from app.audit.events import AuditEvent, EventType
from app.audit.report import AuditQuery
from app.store import index
from app.store.books import CacheBook, StudyBook
from tests.conftest import VaultEnv


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


def test_the_cache_budget_weighs_sizes_from_an_index_alone(env: VaultEnv) -> None:
    conn = env.vault._core.conn
    book = CacheBook(conn)
    found = plans(conn, lambda: (book.total(), book.evictable(0.0)))
    assert len(found) == 2
    for plan in found.values():
        assert "COVERING INDEX instances_study_size" in plan and "SCAN instances\n" not in plan + "\n", plan


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
    home, key = tmp_path / "old", bytes(range(32))
    home.mkdir()
    conn = sqlcipher3.connect(str(home / index.INDEX_FILE), isolation_level=None)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    index.manifest.register(conn)
    conn.executescript("BEGIN;" + index.SCHEMA + "PRAGMA user_version = 1; COMMIT;")
    for step in range(2, 21):
        conn.executescript(f"BEGIN; {index.MIGRATIONS[step]} PRAGMA user_version = {step}; COMMIT;")
    conn.executemany("INSERT INTO audit (seq, at, record, prev_hash, hash) VALUES (?, 't', ?, '', '')",
                     [(1, '{"patients": ["P1", "P2"]}'), (2, '{"patients": []}')])
    conn.close()
    upgraded = index.connect(home, key)
    assert upgraded.execute("SELECT patient, seq, n FROM audit_patients ORDER BY n").fetchall() == [
        ("P1", 1, 0), ("P2", 1, 1)]
    upgraded.executescript(f"BEGIN; {index.MIGRATIONS[21]} COMMIT;")  # idempotent
    assert upgraded.execute("SELECT count(*) FROM audit_patients").fetchone() == (2,)
    upgraded.close()
