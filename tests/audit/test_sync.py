"""Store-and-forward to a real rsyslog over mutual TLS: exactly once, in order, through outages."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.events import AuditEvent, EventType
from app.audit.report import AuditQuery
from app.audit.repository import (
    UNTRUSTED_ALERT,
    Repository,
    RepositoryHalted,
    RepositoryUnreachable,
    sync_job,
)
from app.audit.syslog import SignedHead, as_entry, as_head, frame, parse
from app.errors import UsageError
from app.security.tls import TlsIdentity
from tests.conftest import CliUsers, VaultEnv
from tests.peers.pki import Authority, Site
from tests.peers.rsyslog import Rsyslog

pytestmark = pytest.mark.skipif(shutil.which("rsyslogd") is None and not Path("/usr/sbin/rsyslogd").exists(),
                                reason="rsyslog is not installed (installer/setup.sh installs it as root)")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path, "audit.hospital.test")


@pytest.fixture
def repository(tmp_path: Path, site: Site) -> Iterator[Rsyslog]:
    peer = Rsyslog(tmp_path / "rsyslog", site.ca.cert, site.server)
    peer.start()
    yield peer
    peer.stop()


def _configure(env: VaultEnv, peer: Rsyslog, identity: TlsIdentity) -> None:
    env.vault.trail.set_repository(env.login("admin"),
                                   Repository("127.0.0.1", peer.port, identity, "audit.hospital.test"))


def _activity(env: VaultEnv, n: int) -> None:
    for i in range(n):
        env.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user="rad", detail={"n": i}))


def _received(peer: Rsyslog, count: int) -> tuple[list[int], list[int]]:
    """Sequence numbers of the events and of the signed heads rsyslog wrote, in file order."""
    events, heads = [], []
    for line in peer.wait_for(count):
        received = parse(line)
        assert received is not None, line
        if (entry := as_entry(received)) is not None:
            events.append(entry.seq)
        elif (head := as_head(received)) is not None:
            heads.append(head.seq)
    return events, heads


def test_every_event_arrives_once_in_order_across_a_repository_restart(
        env: VaultEnv, site: Site, repository: Rsyslog) -> None:
    _configure(env, repository, site.identity())
    _activity(env, 25)
    forwarder = env.vault.trail.forwarder()
    first = forwarder.drain()
    assert first.sent == first.status.head_seq and first.status.pending == 0

    repository.stop()
    _activity(env, 40)  # written while the repository is down: they queue
    with pytest.raises(RepositoryUnreachable, match=r"unreachable.*queued"):
        forwarder.drain()
    assert forwarder.status().pending >= 40

    repository.start()
    second = forwarder.drain(batch=16)  # several confirmed batches
    head = second.status.head_seq
    assert second.status.pending == 0 and second.sent >= 40

    events, heads = _received(repository, head + 1 + (second.sent + 15) // 16)
    assert events == list(range(1, head + 1))  # every event exactly once, in order
    assert heads and heads[-1] == head  # each batch ends with a signed head

    local = {e.seq: e for e in env.vault._gate._audit.entries()}
    for line in repository.lines():
        entry = as_entry(parse(line))
        if entry is not None:
            assert (entry.hash, entry.message) == (local[entry.seq].hash, local[entry.seq].message)

    result = env.vault.trail.reconcile(env.login("admin"), repository.received)
    assert result.ok and result.missing == [] and result.duplicates == 0
    assert result.checkpoints == len(heads) and result.received == head


def test_an_untrusted_repository_certificate_stops_sending_and_raises_an_alert(
        env: VaultEnv, site: Site, tmp_path: Path) -> None:
    rogue = Authority(tmp_path / "rogue", "Rogue CA")
    impostor = rogue.issue("audit.hospital.test")
    both = tmp_path / "both-cas.pem"  # the impostor would accept our client certificate
    both.write_bytes(site.ca.cert.read_bytes() + rogue.cert.read_bytes())
    peer = Rsyslog(tmp_path / "impostor", both, impostor)
    peer.start()
    try:
        _configure(env, peer, site.identity())
        _activity(env, 3)
        forwarder = env.vault.trail.forwarder()
        with pytest.raises(RepositoryHalted, match="does not trust"):
            forwarder.drain()
        with pytest.raises(RepositoryHalted, match="stopped"):  # stays stopped, without retrying
            forwarder.drain()
        assert peer.wait_for(1, timeout=1.0) == []
        status = forwarder.status()
        assert status.halted and status.pending > 0
        alerts = env.vault._gate._audit.records(AuditQuery(event_type=EventType.SECURITY_ALERT, limit=5))
        assert alerts and alerts[0].detail["alert"] == UNTRUSTED_ALERT

        # The real repository is back; an administrator sets it again and sending resumes,
        # the alert with it.
        peer.stop()
        peer.use(site.ca.cert, site.server)
        peer.start()
        _configure(env, peer, site.identity())
        result = forwarder.drain()
        assert result.status.pending == 0 and not result.status.halted
        events, _ = _received(peer, result.status.head_seq)
        alert_seq = alerts[0].seq
        assert alert_seq in events and events == sorted(set(events))
    finally:
        peer.stop()


def test_the_repository_refuses_a_workstation_certificate_from_another_ca(
        env: VaultEnv, site: Site, repository: Rsyslog, tmp_path: Path) -> None:
    outsider = Authority(tmp_path / "outsider", "Outsider CA").issue("workstation-7")
    identity = TlsIdentity(site.ca.cert.read_text(), outsider.cert.read_text(), outsider.key.read_text())
    _configure(env, repository, identity)
    with pytest.raises(RepositoryUnreachable):
        env.vault.trail.forwarder().drain()
    assert not env.vault.trail.forwarder().status().halted  # our side is fine: retry later
    assert repository.wait_for(1, timeout=1.0) == []


def test_reconcile_names_missing_altered_and_foreign_events(
        env: VaultEnv, site: Site, repository: Rsyslog, tmp_path: Path) -> None:
    _configure(env, repository, site.identity())
    _activity(env, 12)
    head = env.vault.trail.forwarder().drain().status.head_seq
    lines = repository.wait_for(head + 1)
    by_seq = {as_entry(parse(line)).seq: line for line in lines if as_entry(parse(line))}

    head_line = next(line for line in lines if as_head(parse(line)))
    tampered = [line for line in lines if line is not by_seq[4]]  # lost there
    tampered = [line.replace('UserID="rad"', 'UserID="mallory"') if line is by_seq[6] else line
                for line in tampered]
    forged_head = head_line.replace(as_entry(parse(by_seq[head])).hash, "0" * 64)
    tampered.append(forged_head)
    tampered.append(by_seq[8])  # a duplicate after a reconnect: expected, not a finding
    tampered.append(by_seq[9].replace('seq="9"', f'seq="{head + 5}"'))  # we never wrote that one
    central = tmp_path / "central.log"
    central.write_text("\n".join(tampered) + "\n")

    result = env.vault.trail.reconcile(env.login("admin"), central)
    assert not result.ok
    assert result.missing == [4] and result.unknown == [head + 5] and result.duplicates == 1
    assert 6 in result.altered and 8 not in result.altered
    assert result.checkpoints == 2 and result.bad_checkpoints == [head]  # the forged head


def test_the_background_worker_sends_as_events_arrive(
        env: VaultEnv, site: Site, repository: Rsyslog) -> None:
    _configure(env, repository, site.identity())
    statuses = []
    worker = sync_job(lambda: env.vault.trail.forwarder(own_connection=True),
                      lambda status, error: statuses.append((status, error)), interval=0.2)
    worker.start()
    try:
        _activity(env, 5)
        head = env.vault._gate._audit.head()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(s.sent_seq >= head for s, _ in statuses):
            time.sleep(0.05)
        events, _ = _received(repository, head)
        assert events[-5:] == list(range(head - 4, head + 1))
    finally:
        worker.stop()
    assert all(error is None for _, error in statuses)


def test_without_a_repository_sync_says_how_to_set_one(env: VaultEnv) -> None:
    with pytest.raises(UsageError, match="audit repository set"):
        env.vault.trail.forwarder().drain()


def test_octet_counting_counts_bytes_not_characters() -> None:
    message = "<85>1 - h custodian - IHE+RFC-3881 - \ufeffÄrztin".encode()
    framed = frame(message)
    length, rest = framed.split(b" ", 1)
    assert int(length) == len(rest) == len(message) and len(message) > len(message.decode())


def test_identity_refuses_a_key_of_another_certificate(site: Site) -> None:
    with pytest.raises(UsageError, match="does not belong"):
        TlsIdentity.from_files(site.ca.cert, site.client.cert, site.server.key)


def test_cli_sets_syncs_and_reconciles(cli_users: CliUsers, site: Site, repository: Rsyslog,
                                       tmp_path: Path) -> None:
    cli = cli_users.cli
    pki = ("--host", "127.0.0.1", "--port", str(repository.port), "--server-name", "audit.hospital.test",
           "--ca", str(site.ca.cert), "--cert", str(site.client.cert), "--key", str(site.client.key))
    cli_users.login("rad")
    refused = cli("audit", "repository", "set", *pki)
    assert refused.returncode == 3
    cli_users.login("admin")
    assert cli("audit", "repository", "set", *pki).returncode == 0

    synced = cli.json("audit", "sync")
    assert synced["sent"] > 0 and synced["pending"] == 0 and synced["halted"] is None

    repository.stop()
    cli_users.login("rad")  # more events while the repository is away
    cli_users.login("admin")
    offline = cli("audit", "sync")
    assert offline.returncode == 1 and "unreachable" in offline.stderr and "Traceback" not in offline.stderr
    assert cli.json("audit", "repository", "show")["pending"] > 0

    repository.start()
    again = cli.json("audit", "sync")
    assert again["pending"] == 0
    lines = repository.wait_for(again["head_seq"] + 2)
    reconciled = cli.json("audit", "reconcile", "--central", str(repository.received))
    assert reconciled["ok"] and reconciled["missing"] == []

    cut = tmp_path / "cut.log"
    cut.write_text("\n".join(lines[:3]) + "\n")  # the repository lost most of it
    report = cli("audit", "reconcile", "--central", str(cut))
    assert report.returncode == 4 and "missing there" in report.stdout


def _rewrite_without(env: VaultEnv, user: str) -> int:
    """What someone holding every key can do to the local trail: drop one user's records, number
    and chain the rest again and sign a new head. Returns the first sequence number rewritten."""
    import json

    from app.audit.log import GENESIS, _digest

    conn, log = env.vault._core.conn, env.vault._gate._audit
    with env.vault._core.transaction():
        rows = conn.execute("SELECT seq, at, record, message FROM audit ORDER BY seq").fetchall()
        first = next(seq for seq, _, record, _ in rows if json.loads(record)["user"] == user)
        kept = [r for r in rows if json.loads(r[2])["user"] != user]
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                "AND tbl_name = 'audit'").fetchall()
        for name, _ in triggers:  # append-only is a rule of the schema, which the key holder owns
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DELETE FROM audit")
        conn.execute("DELETE FROM audit_checkpoints")
        prev = GENESIS
        for seq, (_, at, record, message) in enumerate(kept, 1):
            digest = _digest(prev, seq, at.encode(), record.encode(), message.encode() if message else None)
            conn.execute("INSERT INTO audit (seq, at, record, message, prev_hash, hash) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (seq, at, record, message, prev, digest))
            prev = digest
        for _, sql in triggers:
            conn.execute(sql)
        log.checkpoint()  # signed with the workstation's own key, which the holder has
    return first


def test_a_trail_rewritten_with_every_key_is_caught_by_the_repositorys_copy(
        env: VaultEnv, site: Site, repository: Rsyslog) -> None:
    """The local chain is only as good as its keys: rewritten and re-signed it verifies again. The
    repository's copy, which the key holder cannot reach, names the first record rewritten."""
    _configure(env, repository, site.identity())
    for i in range(6):
        user = "tech" if i % 2 else "rad"
        env.vault._gate._record(AuditEvent(EventType.STUDY_LIST, user=user, detail={"n": i}))
    head = env.vault.trail.forwarder().drain().status.head_seq
    repository.wait_for(head + 1)
    first = _rewrite_without(env, "tech")
    assert env.vault._gate._audit.verify().ok  # the local check alone is fooled
    result = env.vault.trail.reconcile(env.login("admin"), repository.received)
    assert not result.ok
    assert min(result.altered + result.missing) == first


def test_reconcile_after_a_key_move_accepts_the_old_keys_checkpoints_only_for_its_time(
        env: VaultEnv, repository: Rsyslog, site: Site, tmp_path: Path) -> None:
    """The repository keeps checkpoints signed before a key move; they still verify, by the
    retired key's public half, but that key signs nothing after the move."""
    _configure(env, repository, site.identity())
    _activity(env, 5)
    before = env.vault.trail.forwarder().drain().status.head_seq
    old_key = env.vault._gate._audit.signing_key
    moved = env.vault.admin.move_master_key(env.login("admin"), None)  # passphrase -> key file
    assert moved.target == "keyfile"
    _activity(env, 5)
    head = env.vault.trail.forwarder().drain().status.head_seq
    lines = repository.wait_for(head + 2)
    heads = [as_head(parse(line)) for line in lines if as_head(parse(line))]
    assert [h.seq for h in heads if h] == [before, head]

    result = env.vault.trail.reconcile(env.login("admin"), repository.received)
    assert result.ok and result.checkpoints == 2 and result.bad_checkpoints == []

    # A copy of the retired key signing a later head: not accepted.
    log = env.vault._gate._audit
    last = log.entries(head - 1, 1)[0]
    forged = SignedHead(last.seq, last.hash, last.at, old_key.sign(
        f"custodian-audit-checkpoint\n{last.seq}\n{last.hash}\n{last.at}".encode()))
    assert not log.head_signature_valid(forged)
    assert log.head_signature_valid(log.sign_head(last))
