"""PACS nodes and C-ECHO against real peers: Orthanc and DCMTK storescp, plain and with TLS."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.events import EventType, Outcome
from app.audit.report import AuditQuery
from app.errors import CustodianError, UsageError
from app.net.nodes import Node
from tests.conftest import CliUsers, VaultEnv
from tests.peers.dcmtk import StoreScp
from tests.peers.orthanc import AET, Orthanc
from tests.peers.pki import Authority, Site

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("storescp") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return Site(tmp_path_factory.mktemp("site"), "pacs.hospital.test")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    peer = Orthanc(tmp_path_factory.mktemp("orthanc"), known={"custodian": ("CUSTODIAN", 11112)})
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def orthanc_tls(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Orthanc]:
    peer = Orthanc(tmp_path_factory.mktemp("orthanc-tls"), known={"custodian": ("CUSTODIAN", 11112)},
                   tls=(site.ca.cert, site.server))
    peer.start()
    yield peer
    peer.stop()


def _echo_fails(env: VaultEnv, node: Node, match: str) -> None:
    env.vault.nodes.add(env.login("admin"), node)
    with pytest.raises(CustodianError, match=match):
        env.vault.nodes.echo(env.login("rad"), node.name)


def test_echo_reaches_orthanc_and_is_audited(env: VaultEnv, orthanc: Orthanc) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", orthanc.port))
    assert [n.name for n in env.vault.nodes.list(env.login("tech"))] == ["pacs"]
    result = env.vault.nodes.echo(env.login("rad"), "pacs")
    assert result.ok and result.ms > 0
    (event,) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.NODE_ECHO, limit=1))
    assert event.user == "rad" and event.detail["node"] == "pacs"


def test_refusals_are_explained(env: VaultEnv, orthanc: Orthanc) -> None:
    _echo_fails(env, Node("wrong-aet", "NOT-ORTHANC", "127.0.0.1", orthanc.port),
                r"refused the association \(called AE title not recognised\)")
    env.vault.admin.set_policy(env.login("admin"), "ae_title", "STRANGER")  # Orthanc does not know us
    _echo_fails(env, Node("pacs", AET, "127.0.0.1", orthanc.port),
                r"refused the association \(calling AE title not recognised\)")
    _echo_fails(env, Node("nothing", AET, "127.0.0.1", 9), r"nothing is listening there")
    (failure, *_) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.NODE_ECHO, limit=1))
    assert failure.outcome == Outcome.MINOR_FAILURE and "connection refused" in failure.detail["why"]


def test_echo_over_tls_with_orthanc(env: VaultEnv, site: Site, orthanc_tls: Orthanc, tmp_path: Path) -> None:
    env.vault.nodes.add(env.login("admin"), Node("secure", AET, "127.0.0.1", orthanc_tls.port,
                                                 site.identity(), "pacs.hospital.test"))
    assert env.vault.nodes.echo(env.login("rad"), "secure").ok
    rogue = Authority(tmp_path / "rogue", "Rogue CA").cert
    _echo_fails(env, Node("untrusting", AET, "127.0.0.1", orthanc_tls.port, site.identity(ca=rogue),
                          "pacs.hospital.test"), r"certificate this workstation does not trust")
    _echo_fails(env, Node("plain", AET, "127.0.0.1", orthanc_tls.port), r"expect TLS")
    _echo_fails(env, Node("misnamed", AET, "127.0.0.1", orthanc_tls.port, site.identity(),
                          "other.hospital.test"), r"does not trust")


def test_echo_over_tls_with_dcmtk(env: VaultEnv, site: Site, tmp_path: Path) -> None:
    peer = StoreScp(tmp_path / "storescp", tls=(site.ca.cert, site.server))
    peer.start()
    try:
        env.vault.nodes.add(env.login("admin"), Node("dcmtk", "STORESCP", "127.0.0.1", peer.port,
                                                     site.identity(), "pacs.hospital.test"))
        assert env.vault.nodes.echo(env.login("tech"), "dcmtk").ok
        outsider = Authority(tmp_path / "outsider", "Outsider CA").issue("workstation-7")
        _echo_fails(env, Node("dcmtk-outsider", "STORESCP", "127.0.0.1", peer.port,
                              site.identity(client=outsider), "pacs.hospital.test"), "Could not reach")
    finally:
        peer.stop()


def test_node_settings_are_checked(env: VaultEnv, site: Site) -> None:
    admin = env.login("admin")
    for bad in (lambda: Node("pacs", "A" * 17, "h", 104), lambda: Node("pacs", "BAD\\AE", "h", 104),
                lambda: Node("pacs", "PACS", "h", 0), lambda: Node("bad name", "PACS", "h", 104)):
        with pytest.raises(UsageError):
            bad()
    with pytest.raises(CustodianError, match="no PACS node"):
        env.vault.nodes.remove(admin, "never-added")
    with pytest.raises(UsageError, match="AE title"):
        env.vault.admin.set_policy(admin, "ae_title", "WAY-TOO-LONG-AE-TITLE")


def test_cli_nodes(cli_users: CliUsers, orthanc: Orthanc, site: Site) -> None:
    cli = cli_users.cli
    add = ("node", "add", "pacs", "--aet", AET, "--host", "127.0.0.1", "--port", str(orthanc.port))
    assert cli(*add).returncode == 0  # cli_users leaves the admin logged in
    assert cli.json("node", "list") == [{"node": "pacs", "aet": AET, "host": "127.0.0.1",
                                         "port": orthanc.port, "tls": False, "from": ["127.0.0.1"],
                                         "peer_name": "127.0.0.1"}]
    senders = cli.json(*add[:2], "modality", *add[3:], "--from", "10.0.0.7", "--from", "ct.hospital.test",
                       "--peer-name", "CN=ct-7")
    assert (senders["from"], senders["peer_name"]) == (["10.0.0.7", "ct.hospital.test"], "CN=ct-7")
    bad_address = cli(*add, "--from", "not an address")
    assert bad_address.returncode == 2 and "IP addresses or host names" in bad_address.stderr
    half_tls = cli(*add, "--tls-ca", str(site.ca.cert))
    assert half_tls.returncode == 2 and "all three" in half_tls.stderr
    cli_users.login("rad")
    assert cli(*add).returncode == 3
    echoed = cli.json("node", "echo", "pacs")
    assert echoed["ok"] and echoed["node"] == "pacs"
    missing = cli("node", "echo", "nowhere")
    assert missing.returncode == 1 and "no PACS node named 'nowhere'" in missing.stderr
    cli_users.login("admin")
    assert cli("node", "remove", "pacs").returncode == 0
    assert cli("node", "remove", "modality").returncode == 0
