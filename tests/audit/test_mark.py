"""The signed "verified through" mark: a report walks only the records after it and says so; a
change before it is still found by the whole chain's verify, and a mark the vault did not sign is
refused (the report then walks the whole chain)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.audit.events import AuditEvent, EventType
from app.audit.log import MARK_KEY, _mark_payload
from app.audit.report import AuditQuery, AuditReport, ReportKind
from app.security.roles import Role
from app.store.books import MetaBook
from tests.audit.test_log import tamper
from tests.conftest import VaultEnv


@pytest.fixture
def marked(env: VaultEnv) -> VaultEnv:
    """A trail naming PID-M, verified whole (which sets the mark) by the privacy officer."""
    env.add("privacy", Role.PRIVACY_OFFICER)
    for n in range(5):
        env.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="rad", patients=("PID-M",),
                                           detail={"n": n}))
    assert env.vault.trail.verify(env.login("privacy")).ok
    return env


def _report(env: VaultEnv) -> AuditReport:
    return env.vault.trail.report(env.login("privacy"), ReportKind.PATIENT, AuditQuery(patient="PID-M"))


def _mark(env: VaultEnv) -> dict[str, object]:
    held = MetaBook(env.vault._core.conn).get(MARK_KEY)
    assert held is not None
    return dict(json.loads(held))


def test_a_report_walks_after_the_mark_and_a_change_before_it_needs_the_whole_verify(marked: VaultEnv
                                                                                     ) -> None:
    mark = _mark(marked)
    first = _report(marked)
    assert first.chain_ok and first.chain.start == int(str(mark["seq"])) + 1 and first.chain.events < 5
    line = first.header_lines()[2]
    assert f"events 1-{mark['seq']} are covered by this workstation's signed mark" in line
    assert "custodian audit verify" in line and str(mark["full_at"])[:10] in line
    second = _report(marked)  # the first report moved the mark on to what it walked
    assert second.chain.start == first.chain.head + 1 and _mark(marked)["seq"] == second.chain.head

    (at,) = marked.vault._core.query("SELECT at FROM audit WHERE seq = 2")[0]
    tamper(marked, "UPDATE audit SET at = '2026-01-01T00:00:00.000000+00:00' WHERE seq = 2")
    assert _report(marked).chain_ok  # before the mark: not walked, as its header says
    whole = marked.vault.trail.verify(marked.login("privacy"))
    assert not whole.ok and whole.first_bad_seq == 2
    tamper(marked, "UPDATE audit SET at = ? WHERE seq = 2", at)

    # The tail cut from the marked record on, with its checkpoints and lookup rows: the mark still
    # vouches for its record, to the report and to the whole chain's verify alike.
    cut = _mark(marked)["seq"]
    for sql in ("DROP TRIGGER audit_patients_delete", "DELETE FROM audit_patients WHERE seq >= ?",
                "DELETE FROM audit_checkpoints WHERE seq >= ?", "DELETE FROM audit WHERE seq >= ?"):
        tamper(marked, sql, *([cut] if "?" in sql else []))
    assert _report(marked).chain.first_bad_seq == cut
    assert marked.vault.trail.verify(marked.login("privacy")).first_bad_seq == cut


def test_a_change_after_the_mark_is_found_by_the_report_and_a_forged_mark_is_refused(marked: VaultEnv
                                                                                    ) -> None:
    (after,) = marked.vault._core.query("SELECT max(seq) FROM audit")[0]  # the verify's own record
    assert after > int(str(_mark(marked)["seq"]))
    tamper(marked, "UPDATE audit SET record = replace(record, 'privacy', 'nobody') WHERE seq = ?", after)
    report = _report(marked)
    assert not report.chain_ok and report.chain.first_bad_seq == after and report.chain.start > 1
    assert report.header_lines()[2].startswith("WARNING") and f"first bad event {after}" in report.to_csv()

    # A mark moved past the change, signed by a key that is not the vault's.
    head, head_hash = marked.vault._core.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")[0]
    full_at = str(_mark(marked)["full_at"])
    forged = Ed25519PrivateKey.generate().sign(_mark_payload(head, head_hash, full_at))
    with marked.vault._core.transaction() as conn:
        MetaBook(conn).put(MARK_KEY, json.dumps({"seq": head, "hash": head_hash, "full_at": full_at,
                                                 "signature": forged.hex()}))
    refused = _report(marked).chain
    assert refused.mark_refused and refused.start == 1 and refused.first_bad_seq == after


def test_the_hourly_check_moves_the_mark_on_and_raises_a_break(marked: VaultEnv) -> None:
    for n in range(3):
        marked.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="rad", detail={"n": n}))
    checked = marked.vault.trail.check_new_records()  # the workstation's duty: no session
    (head,) = marked.vault._core.query("SELECT max(seq) FROM audit")[0]
    assert checked.ok and checked.head == head == _mark(marked)["seq"]
    assert _report(marked).chain.start == head + 1, "the report walks only what came after the check"

    (last,) = marked.vault._core.query("SELECT max(seq) FROM audit")[0]
    tamper(marked, "UPDATE audit SET record = replace(record, 'privacy', 'nobody') WHERE seq = ?", last)
    broken = marked.vault.trail.check_new_records()
    assert not broken.ok and broken.first_bad_seq == last and _mark(marked)["seq"] < last
    (alert,) = marked.vault._core.query("SELECT record FROM audit ORDER BY seq DESC LIMIT 1")[0]
    raised = json.loads(alert)
    assert raised["type"] == "security-alert" and raised["detail"]["first_bad_event"] == last
