"""Hostile peers against the storage SCP: garbage and absurd PDU lengths are dropped, silent
connections time out (before TLS too), a flood from one address is closed at the door, and a real
modality (DCMTK storescu) keeps sending meanwhile."""

from __future__ import annotations

import os
import select
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.demo.studies import Patient
from app.net.acceptor import ASSOCIATE_WAIT, MAX_PER_PEER
from app.net.nodes import Node
from app.net.scp import StorageScp
from app.security.tls import TlsIdentity
from tests.conftest import VaultEnv, write_study
from tests.peers.dcmtk import storescu
from tests.peers.pki import Authority

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None,
                                reason="DCMTK is not installed (installer/setup.sh does)")


@pytest.fixture
def scp(env: VaultEnv) -> Iterator[StorageScp]:
    env.vault.nodes.add(env.login("admin"), Node("modality", "STORESCU", "127.0.0.1", 104))
    server = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    server.start()
    yield server
    server.stop()


def _ended(sock: socket.socket) -> bool:
    """Read what the SCP sent; whether it has hung up."""
    try:
        return not sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return True


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the SCP hung up on this connection within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while not _ended(sock):
            pass
    except TimeoutError:
        return False
    return True


def _hung_up(socks: list[socket.socket], *, want: int, within: float) -> int:
    """How many of ``socks`` the SCP hung up on, waiting until ``want`` of them are or ``within``
    seconds have passed."""
    open_socks, closed = list(socks), 0
    deadline = time.monotonic() + within
    while closed < want and open_socks and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(open_socks, [], [], left)
        for sock in readable:
            if _ended(sock):
                open_socks.remove(sock)
                closed += 1
    return closed


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return sock


def _sends(scp: StorageScp, tmp_path: Path, pid: str) -> bool:
    files = write_study(tmp_path / pid, Patient(pid, "Still^Sending"), slices=2, size=16)
    return storescu(scp.port, files, called="CUSTODIAN").returncode == 0


def test_garbage_and_absurd_lengths_are_dropped(env: VaultEnv, scp: StorageScp, tmp_path: Path) -> None:
    hostile: list[socket.socket] = []
    for payload in (b"\x01\x00\xff\xff\xff\xff" + os.urandom(64),  # A-ASSOCIATE-RQ declaring 4 GiB
                    b"\x04\x00\x00\x00\x00\x10" + os.urandom(16),  # P-DATA before any association
                    b"\x01\x00\x00\x00\x00\x08" + os.urandom(8),  # an A-ASSOCIATE-RQ of nonsense
                    os.urandom(512)):
        sock = _connect(scp.port)
        sock.sendall(payload)
        hostile.append(sock)
    try:  # all at once: each is closed by the SCP's own timers, within the associate wait and a margin
        assert all(_closed_by_server(sock, ASSOCIATE_WAIT + 5) for sock in hostile)
    finally:
        for sock in hostile:
            sock.close()
    assert _sends(scp, tmp_path, "PID-AFTER-GARBAGE")
    assert env.vault.admin.verify(env.login("tech")).ok


def test_a_flood_from_one_address_leaves_room_for_a_modality(env: VaultEnv, scp: StorageScp,
                                                              tmp_path: Path) -> None:
    flood = [_connect(scp.port, "127.0.0.2") for _ in range(MAX_PER_PEER * 4)]
    try:
        # (two more may slip in while the connections just admitted start their threads)
        beyond_share = len(flood) - MAX_PER_PEER - 2
        # Well inside ASSOCIATE_WAIT, after which the admitted ones would be closed too; a loaded
        # machine may take a while to accept the whole flood from the listen backlog.
        refused = _hung_up(flood, want=beyond_share, within=ASSOCIATE_WAIT / 2)
        assert refused >= beyond_share, "the flood beyond its share is closed at once"
        assert _sends(scp, tmp_path, "PID-DURING-FLOOD"), "the modality is served meanwhile"
    finally:
        for sock in flood:
            sock.close()


def test_silent_connections_are_closed_after_the_associate_wait(scp: StorageScp) -> None:
    quiet = [_connect(scp.port, "127.0.0.3") for _ in range(3)]
    try:
        started = time.monotonic()
        assert all(_closed_by_server(sock, ASSOCIATE_WAIT + 10) for sock in quiet)
        assert time.monotonic() - started < ASSOCIATE_WAIT + 10
    finally:
        for sock in quiet:
            sock.close()


def test_a_silent_connection_does_not_hold_up_tls_senders(env: VaultEnv, tmp_path: Path) -> None:
    """The TLS handshake is made on each connection's own thread: a connection that never starts
    it (slow-loris on TLS) no longer stops the acceptor, and is closed after the associate wait."""
    site = Authority(tmp_path / "pki")
    ours, sender = site.issue("workstation-7"), site.issue("modality-1")
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("modality", "STORESCU", "127.0.0.1", 104))
    env.vault.nodes.set_scp_tls(admin, TlsIdentity.from_files(site.cert, ours.cert, ours.key))
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    silent = _connect(server.port, "127.0.0.2")
    try:
        files = write_study(tmp_path / "ct", Patient("PID-TLS-QUIET", "Quiet^Line"), slices=2, size=16)
        started = time.monotonic()
        sent = storescu(server.port, files, called="CUSTODIAN", tls=(site.cert, sender))
        assert sent.returncode == 0, sent.stderr
        assert time.monotonic() - started < ASSOCIATE_WAIT, "not held up by the silent connection"
        assert _closed_by_server(silent, ASSOCIATE_WAIT + 5)
    finally:
        silent.close()
        server.stop()
