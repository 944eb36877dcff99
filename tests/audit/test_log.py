"""The hash chain finds every kind of tampering and names the first bad sequence number."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app.audit.events import AuditEvent, EventType
from app.audit.report import AuditQuery
from tests.conftest import VaultEnv


@pytest.fixture
def chain(env: VaultEnv) -> VaultEnv:
    for i in range(10):
        env.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="rad", detail={"n": i}))
    return env


def tamper(env: VaultEnv, sql: str, *params: object) -> None:
    """Change the trail as someone holding the index key could: past the append-only triggers."""
    with env.vault._core.transaction():
        env.vault._core.conn.execute("DROP TRIGGER IF EXISTS audit_append_only_update")
        env.vault._core.conn.execute("DROP TRIGGER IF EXISTS audit_append_only_delete")
        env.vault._core.conn.execute(sql, params)


def test_the_index_refuses_to_change_or_delete_records(chain: VaultEnv) -> None:
    import sqlcipher3

    for sql in ("UPDATE audit SET record = '{}' WHERE seq = 2", "DELETE FROM audit WHERE seq = 2"):
        with pytest.raises(sqlcipher3.IntegrityError, match="append-only"), chain.vault._core.transaction():
            chain.vault._core.conn.execute(sql)
    assert chain.vault._gate._audit.verify().ok


def _seqs(env: VaultEnv) -> list[int]:
    return [s for (s,) in env.vault._core.query("SELECT seq FROM audit ORDER BY seq")]


def test_intact_chain(chain: VaultEnv) -> None:
    report = chain.vault._gate._audit.verify()
    assert report.ok and report.first_bad_seq is None and report.events == len(_seqs(chain))


def test_edited_record(chain: VaultEnv) -> None:
    seq = _seqs(chain)[7]
    record = json.loads(chain.vault._core.query("SELECT record FROM audit WHERE seq = ?", (seq,))[0][0])
    record["user"] = "someone-else"
    tamper(chain, "UPDATE audit SET record = ? WHERE seq = ?", json.dumps(record), seq)
    assert chain.vault._gate._audit.verify().first_bad_seq == seq


def test_deleted_record(chain: VaultEnv) -> None:
    seq = _seqs(chain)[5]
    tamper(chain, "DELETE FROM audit WHERE seq = ?", seq)
    assert chain.vault._gate._audit.verify().first_bad_seq == seq


def test_any_deleted_record_is_named_wherever_it_falls(chain: VaultEnv) -> None:
    for seq in _seqs(chain)[:-1]:  # the last one is the cut tail, below
        row = chain.vault._core.query("SELECT * FROM audit WHERE seq = ?", (seq,))[0]
        tamper(chain, "DELETE FROM audit WHERE seq = ?", seq)
        assert chain.vault._gate._audit.verify().first_bad_seq == seq, seq
        tamper(chain, f"INSERT INTO audit VALUES ({', '.join('?' * len(row))})", *row)
    assert chain.vault._gate._audit.verify().ok


def test_reordered_records(chain: VaultEnv) -> None:
    a, b = _seqs(chain)[3:5]
    rows = {s: r for s,
            r in chain.vault._core.query("SELECT seq, record FROM audit WHERE seq IN (?, ?)", (a, b))}
    tamper(chain, "UPDATE audit SET record = ? WHERE seq = ?", rows[b], a)
    tamper(chain, "UPDATE audit SET record = ? WHERE seq = ?", rows[a], b)
    assert chain.vault._gate._audit.verify().first_bad_seq == a


def test_inserted_record(chain: VaultEnv) -> None:
    seq = _seqs(chain)[-1]
    prev = chain.vault._core.query("SELECT hash FROM audit WHERE seq = ?", (seq,))[0][0]
    tamper(chain, "INSERT INTO audit (seq, at, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
         seq + 1, "2026-01-01T00:00:00+00:00", "{}", prev, "0" * 64)
    assert chain.vault._gate._audit.verify().first_bad_seq == seq + 1


def test_rewritten_hash_breaks_the_next_record(chain: VaultEnv) -> None:
    seq = _seqs(chain)[2]
    tamper(chain, "UPDATE audit SET hash = ? WHERE seq = ?", "f" * 64, seq)
    assert chain.vault._gate._audit.verify().first_bad_seq == seq


def test_cut_tail_is_found_by_the_signed_checkpoint(chain: VaultEnv) -> None:
    head = chain.vault._gate._audit.checkpoint()
    assert chain.vault._gate._audit.verify().ok
    tamper(chain, "DELETE FROM audit WHERE seq >= ?", head - 2)  # an intact but shorter chain
    report = chain.vault._gate._audit.verify()
    assert not report.ok and report.first_bad_seq == head - 2


def test_forged_checkpoint_signature_is_found(chain: VaultEnv) -> None:
    head = chain.vault._gate._audit.checkpoint()
    tamper(chain, "UPDATE audit_checkpoints SET signature = ? WHERE seq = ?", b"\0" * 64, head)
    assert chain.vault._gate._audit.verify().first_bad_seq == head


def test_checkpoints_are_made_as_the_trail_grows(chain: VaultEnv) -> None:
    from app.audit.log import CHECKPOINT_EVERY

    while chain.vault._core.query("SELECT max(seq) FROM audit")[0][0] < CHECKPOINT_EVERY:
        chain.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="rad"))
    report = chain.vault._gate._audit.verify()
    assert report.ok and report.checkpoints >= 1


def test_events_from_many_threads_share_commits_and_all_land(env: VaultEnv,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:

    batches: list[int] = []
    real = env.vault._gate._audit.append_all
    monkeypatch.setattr(env.vault._gate._audit, "append_all",
                        lambda events: batches.append(len(events)) or real(events))
    before = len(_seqs(env))

    def writer(n: int) -> None:
        for i in range(25):
            env.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user=f"user{n}", detail={"i": i}))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_seqs(env)) - before == 200 and sum(batches) == 200
    assert len(batches) < 200  # some commits carried several threads' events
    assert env.vault._gate._audit.verify().ok
    for n in range(8):  # each writer's events in the order it wrote them
        mine = [r.detail["i"] for r in env.vault._gate._audit.records() if r.user == f"user{n}"]
        assert mine == list(range(24, -1, -1))


def test_a_failed_group_commit_fails_every_writer_in_it(env: VaultEnv,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(events: list[AuditEvent]) -> list[int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(env.vault._gate._audit, "append_all", full_disk)
    with pytest.raises(OSError, match="No space"):
        env.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="rad"))
    assert env.vault._gate._writer.waiting == 0


def test_a_thread_holding_the_index_writes_without_waiting_for_the_queue(env: VaultEnv) -> None:
    """Another thread is committing the queue; this one holds the index and records: no deadlock."""
    vault = env.vault
    started, done = threading.Event(), threading.Event()

    def other_writer() -> None:
        started.set()
        vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="other"))
        done.set()

    with vault._core.lock:
        worker = threading.Thread(target=other_writer)
        worker.start()
        started.wait(5)
        deadline = time.monotonic() + 5
        # it leads, waiting for the index
        while not vault._gate._writer.committing and time.monotonic() < deadline:
            time.sleep(0.01)
        assert vault._gate._writer.committing
        vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="holder"))  # must not block
    worker.join(10)
    assert done.is_set()
    assert {r.user for r in vault._gate._audit.records(AuditQuery(limit=2))} == {"holder", "other"}
