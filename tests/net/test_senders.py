"""A claimed AE title is not an identity (issue 22): senders that claim a node's AE title from
another address, or with another node's certificate from the same CA, are refused with an
A-ASSOCIATE-RJ and a Security Alert; the SCP listens on loopback until the site sets its address;
the site's require_tls refuses plain DICOM both ways. Real senders: DCMTK storescu and pynetdicom
bound to other loopback addresses (127.0.0.0/8 is all this machine's)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from app.demo.studies import Patient, ct_study
from app.errors import CustodianError, UsageError
from app.net.admission import Admission, Peer, address_of
from app.net.nodes import Node
from app.net.scp import StorageScp
from app.security import managed_policy
from app.security.tls import TlsIdentity
from app.vault import Vault
from app.vault.gate import PLAIN_DICOM_REFUSED
from app.vault.nodes import PLAIN_NODE_REFUSED
from tests.conftest import PASSPHRASE, REPO, CliUsers, VaultEnv, study_bytes, write_study
from tests.peers.dcmtk import StoreScp, storescu
from tests.peers.pki import Authority
from tests.peers.ports import free_port, stop_gracefully, wait_listening
from tests.peers.sender import send
from tests.stress.spoofing import refusals

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None,
                                reason="DCMTK is not installed (installer/setup.sh does)")

VICTIM = Patient("PID-VICTIM", "Victim^Vera")
REJECTED = (0x01, 0x01, 0x03)  # rejected permanently by the service user: calling AE title not recognised


def _studies(env: VaultEnv, patient_id: str) -> int:
    return len(env.vault.reading.studies(env.login("rad"), patient_id))


@pytest.fixture
def scp(env: VaultEnv) -> Iterator[StorageScp]:
    """The attack's setting: an existing patient, and nodes at other addresses than the sender's."""
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("pacs", "PACS", "127.0.0.3", 104))
    env.vault.nodes.add(admin, Node("ct", "CT1", "ct.invalid", 104, addresses=("127.0.0.4", "127.0.0.5")))
    env.vault.nodes.add(admin, Node("mr", "MR1", "127.0.0.9", 104, addresses=("localhost",)))
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(VICTIM, slices=1, size=16))
    server = env.vault.pacs.storage_scp(port=0)  # on the site policy's address: loopback
    server.start()
    yield server
    server.stop()


def test_a_plain_sender_claiming_a_nodes_ae_title_from_elsewhere_is_refused(env: VaultEnv, scp: StorageScp,
                                                                             tmp_path: Path) -> None:
    spoofed = ct_study(VICTIM, slices=2, size=16)  # a new study under the existing patient
    assert send(scp.port, spoofed, calling="PACS", source="127.0.0.2").rejection == REJECTED
    files = write_study(tmp_path / "ct", VICTIM, slices=2, size=16)
    from_here = storescu(scp.port, files, calling="PACS", called="CUSTODIAN")  # from 127.0.0.1
    assert from_here.returncode != 0 and "Calling AE Title Not Recognized" in from_here.stderr
    assert _studies(env, "PID-VICTIM") == 1, "nothing was stored"
    second, first = refusals(env)  # newest first
    assert (first.user, first.detail["calling_ae"]) == ("dicom:PACS", "PACS")
    assert first.detail["address"] == "127.0.0.2"
    assert "'pacs' sends from 127.0.0.3" in str(first.detail["why"])
    assert second.detail["address"] == "127.0.0.1"
    assert send(scp.port, spoofed, calling="PACS", source="127.0.0.3").stored == 2, "the node itself may send"
    assert _studies(env, "PID-VICTIM") == 2


def test_a_node_sends_from_any_of_its_addresses_and_host_names(env: VaultEnv, scp: StorageScp) -> None:
    study = ct_study(Patient("PID-ADDR", "Many^Addresses"), slices=1, size=16)
    assert send(scp.port, study, calling="CT1", source="127.0.0.5").stored == 1
    assert send(scp.port, study, calling="CT1", source="127.0.0.3").rejection == REJECTED  # PACS's, not CT1's
    assert send(scp.port, study, calling="MR1", source="127.0.0.1").stored == 1  # localhost, resolved
    assert send(scp.port, study, calling="MR1", source="127.0.0.2").rejection == REJECTED
    assert send(scp.port, study, calling="STRANGER", source="127.0.0.1").rejection == REJECTED
    assert [e.detail["calling_ae"] for e in refusals(env)] == ["STRANGER", "MR1", "CT1"]


def test_host_names_are_resolved_when_a_sender_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's host name is resolved at association time (kept RESOLVED_FOR seconds), so a
    modality that moves to another address is followed; DNS stands in as a table here."""
    dns = {"modality.hospital.test": "10.1.1.1"}
    admission = Admission([Node("mod", "MOD", "modality.hospital.test", 104)], require_tls=False,
                          resolver=lambda host: frozenset(filter(None, [address_of(dns.get(host, ""))])))
    assert admission.refusal("MOD", Peer("10.1.1.1")) is None
    dns["modality.hospital.test"] = "10.1.1.2"
    assert admission.refusal("MOD", Peer("10.1.1.2")) is not None, "the answer is kept for RESOLVED_FOR"
    monkeypatch.setattr("app.net.admission.RESOLVED_FOR", 0.0)
    assert admission.refusal("MOD", Peer("10.1.1.2")) is None
    assert admission.refusal("MOD", Peer("::ffff:10.1.1.2")) is None  # as a dual-stack listener sees it
    assert "sends from modality.hospital.test" in str(admission.refusal("MOD", Peer("10.1.1.1")))
    del dns["modality.hospital.test"]
    assert admission.refusal("MOD", Peer("10.1.1.2")) is not None, "a name that no longer resolves: nobody"


def test_the_scp_listens_on_loopback_until_the_site_sets_its_address(env: VaultEnv) -> None:
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("modality", "STORESCU", "127.0.0.1", 104))
    assert env.vault.policy.scp_address == "127.0.0.1"
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    try:
        assert (server.host, server.local_only) == ("127.0.0.1", True)
        with pytest.raises(ConnectionRefusedError):  # another address of this machine: not listened on
            socket.create_connection(("127.0.0.2", server.port), timeout=5)
    finally:
        server.stop()
    env.vault.admin.set_policy(admin, "scp_address", "0.0.0.0")
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    try:
        assert not server.local_only
        socket.create_connection(("127.0.0.2", server.port), timeout=5).close()
    finally:
        server.stop()
    with pytest.raises(UsageError, match="IP address"):
        env.vault.admin.set_policy(admin, "scp_address", "pacs.hospital.test")


def test_a_tls_certificate_speaks_only_for_its_own_node(env: VaultEnv, tmp_path: Path) -> None:
    site = Authority(tmp_path / "pki")
    ours, ct, mr = site.issue("workstation-7"), site.issue("ct-1"), site.issue("mr-1")
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("ct", "CT1", "127.0.0.1", 104, peer_name="ct-1"))
    env.vault.nodes.add(admin, Node("mr", "MR1", "127.0.0.1", 104, peer_name="CN=mr-1"))
    env.vault.nodes.set_scp_tls(admin, TlsIdentity.from_files(site.cert, ours.cert, ours.key))
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    try:
        study = ct_study(VICTIM, slices=1, size=16)
        # the attack: a certificate from the site's CA, but the MR's, claiming the CT's AE title
        assert send(server.port, study, calling="CT1", tls=(site, mr)).rejection == REJECTED
        files = write_study(tmp_path / "ct", VICTIM, slices=1, size=16)
        assert storescu(server.port, files, calling="CT1", called="CUSTODIAN",
                        tls=(site.cert, mr)).returncode != 0
        outsider = Authority(tmp_path / "outsider", "Outsider CA").issue("ct-1")
        assert not send(server.port, study, calling="CT1", tls=(site, outsider)).established
        assert storescu(server.port, files, calling="CT1", called="CUSTODIAN").returncode != 0  # plain
        assert _studies(env, "PID-VICTIM") == 0
        plain, foreign, dcmtk, pynetdicom = refusals(env, at_least=4)
        assert "(CN=mr-1) is not its node's: 'ct' must present ct-1" in str(pynetdicom.detail["why"])
        assert dcmtk.detail["calling_ae"] == "CT1"
        assert "not from a CA this station trusts" in str(foreign.detail["why"]) and foreign.user is None
        assert "did not speak TLS" in str(plain.detail["why"])
        assert send(server.port, study, calling="CT1", tls=(site, ct)).stored == 1
        assert storescu(server.port, files, calling="MR1", called="CUSTODIAN",
                        tls=(site.cert, mr)).returncode == 0
    finally:
        server.stop()


def test_require_tls_refuses_plain_dicom_both_ways(env: VaultEnv, tmp_path: Path) -> None:
    admin, tech = env.login("admin"), env.login("tech")
    env.vault.nodes.add(admin, Node("old", "OLD", "127.0.0.1", free_port()))  # plain, set before the rule
    env.vault.intake.import_bytes(tech, study_bytes(slices=1, size=16))
    (study,) = env.vault.reading.studies(tech)
    env.vault.admin.set_policy(admin, "require_tls", "on")
    with pytest.raises(UsageError, match=r"requires TLS .* needs --tls-ca"):
        env.vault.nodes.add(admin, Node("new", "NEW", "127.0.0.1", 104))
    assert [n.name for n in env.vault.nodes.list(admin)] == ["old"]
    (alert,) = refusals(env, PLAIN_NODE_REFUSED)
    assert alert.user == "admin" and alert.detail["node"] == "new"
    # out: refused before anything is sent (nothing listens there: no "connection refused")
    for attempt in (lambda: env.vault.nodes.echo(tech, "old"),
                    lambda: env.vault.pacs.query(tech, "old", patient_id="*"),
                    lambda: env.vault.pacs.retrieve(tech, "old", study.study_uid),
                    lambda: env.vault.outbox.send(tech, "old", study.study_uid)):
        with pytest.raises(CustodianError, match=r"requires TLS on every DICOM connection.*'old' is set"):
            attempt()
    assert env.vault.outbox.waiting(tech) == [], "a refused send does not wait in the outbox"
    alerts = refusals(env, PLAIN_DICOM_REFUSED)
    assert len(alerts) == 4 and {(a.user, a.detail["node"]) for a in alerts} == {("tech", "old")}
    # in: a plain sender, even from the node's own address, is refused
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    try:
        sent = send(server.port, ct_study(VICTIM, slices=1, size=16), calling="OLD", source="127.0.0.1")
        assert sent.rejection == REJECTED
    finally:
        server.stop()
    (refused,) = refusals(env)
    assert refused.detail["why"] == "the site requires TLS, and it connected without"


def test_under_require_tls_tls_nodes_work(env: VaultEnv, tmp_path: Path) -> None:
    site = Authority(tmp_path / "pki")
    peer_cert, ours = site.issue("pacs.hospital.test"), site.issue("workstation-7")
    peer = StoreScp(tmp_path / "storescp", tls=(site.cert, peer_cert))
    peer.start()
    try:
        admin = env.login("admin")
        env.vault.admin.set_policy(admin, "require_tls", "on")
        identity = TlsIdentity.from_files(site.cert, ours.cert, ours.key)
        env.vault.nodes.add(admin, Node("secure", "STORESCP", "127.0.0.1", peer.port, identity,
                                        "pacs.hospital.test"))
        assert env.vault.nodes.echo(env.login("tech"), "secure").ok
    finally:
        peer.stop()


def test_require_tls_from_the_signed_site_policy(env: VaultEnv, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    public, policy = tmp_path / "site-key.pub", tmp_path / "site-policy.json"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    policy.write_bytes(managed_policy.sign({"require_tls": True, "nodes": [
        {"name": "sitepacs", "ae_title": "SITEPACS", "host": "127.0.0.1", "port": free_port()}]}, private))
    monkeypatch.setenv("CUSTODIAN_SITE_POLICY", str(policy))
    monkeypatch.setenv("CUSTODIAN_SITE_KEY", str(public))
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    env.sessions.clear()
    admin = env.login("admin")
    assert env.vault.policy.require_tls
    with pytest.raises(UsageError, match="managed policy"):
        env.vault.admin.set_policy(admin, "require_tls", "off")
    with pytest.raises(UsageError, match="requires TLS"):
        env.vault.nodes.add(admin, Node("plain", "PLAIN", "127.0.0.1", 104))
    with pytest.raises(CustodianError, match="'sitepacs' is set without"):  # the site's own plain node
        env.vault.nodes.echo(env.login("tech"), "sitepacs")


def test_cli_scp_says_where_it_listens(cli_users: CliUsers) -> None:
    cli = cli_users.cli
    assert cli("node", "add", "modality", "--aet", "STORESCU", "--host", "127.0.0.1", "--port", "104",
               "--from", "127.0.0.1", "--from", "localhost").returncode == 0
    assert cli("policy", "set", "require_tls", "on").returncode == 0
    plain = cli("node", "add", "other", "--aet", "OTHER", "--host", "127.0.0.1", "--port", "104")
    assert plain.returncode == 2 and "requires TLS" in plain.stderr
    port = free_port()
    log = cli.home.parent / "scp.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "app", "--home", str(cli.home), "scp", "--port",
                                    str(port)], cwd=REPO, env=cli.env, stdout=subprocess.DEVNULL,
                                   stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        wait_listening(process, port, log, "custodian scp", timeout=60)
        deadline = time.monotonic() + 30  # (it says so just after the port opens)
        while "until an administrator sets one" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_gracefully(process)
    said = log.read_text()
    assert f"on 127.0.0.1 port {port}" in said
    assert "Only this machine can send to it" in said and "policy set scp_address" in said
    assert "every sender is refused until an administrator sets one with 'custodian scp-tls'" in said
