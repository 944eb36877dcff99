"""Emergency mode (HIPAA 164.308(a)(7)(ii)(C)): only when the PACS and the audit repository are
both down; then the cache reads but changes nothing, and every refusal is in the trail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.errors import NotPermitted, UsageError
from app.net.nodes import Node
from app.vault.gate import EMERGENCY_ALERT
from tests.conftest import CliUsers, Codes, VaultEnv, study_bytes
from tests.peers.ports import free_port


@pytest.fixture
def pacs() -> Iterator[int]:
    """A DICOM peer answering C-ECHO (pynetdicom's own SCP) on a free loopback port."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    ae.require_called_aet = False
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    yield port
    server.shutdown()


def test_read_only_while_both_are_down(env: VaultEnv) -> None:
    items = study_bytes(slices=2, size=16)
    env.vault.intake.import_bytes(env.login("tech"), items)
    first = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    series_uid, study_uid = first.SeriesInstanceUID, first.StudyInstanceUID
    env.vault.nodes.add(env.login("admin"), Node("pacs", "PACS", "127.0.0.1", 9))  # discard: nobody there

    env.vault.enter_emergency_mode()
    assert env.vault.read_only
    rad = env.login("rad")
    assert len(env.vault.reading.studies(rad)) == 1
    assert len(env.vault.reading.open_series(rad, series_uid)) == 2
    with pytest.raises(NotPermitted, match="Emergency mode: the cache is read-only"):
        env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=1, size=16))
    with pytest.raises(NotPermitted, match="Emergency mode"):
        env.vault.outbox.send(env.login("tech"), "pacs", study_uid)
    (alert,) = [r for r in env.vault._gate._audit.records(AuditQuery(event_type=EventType.SECURITY_ALERT))
                if r.detail.get("alert") == EMERGENCY_ALERT]
    assert "connection refused" in str(alert.detail["PACS"]).lower()
    refused = env.vault._gate._audit.records(AuditQuery(user="tech", event_type=EventType.ACCESS_REFUSED))
    assert [r.detail["why"] for r in refused] == ["emergency mode", "emergency mode"]
    # The workstation's own duties change nothing either: a sender, a prefetch and an eviction are
    # refused, and a pin (a reader's change to the cache) is refused like an import.
    with pytest.raises(NotPermitted, match="does not receive instances"):
        env.vault.cache.arrive("MODALITY", study_bytes(slices=1, size=16))
    with pytest.raises(NotPermitted, match="does not prefetch priors"):
        env.vault.cache.prefetch_for(study_uid, "rad")
    with pytest.raises(NotPermitted, match="does not keep the cache to its budget"):
        env.vault.cache.evict()
    with pytest.raises(NotPermitted, match="Emergency mode"):
        env.vault.cache.pin_study(rad, study_uid)
    assert len(env.vault.reading.studies(rad)) == 1


def test_refused_while_the_pacs_answers(env: VaultEnv, pacs: int) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", "PACS", "127.0.0.1", pacs))
    with pytest.raises(UsageError, match="The PACS answers: start normally"):
        env.vault.enter_emergency_mode()
    assert not env.vault.read_only
    assert env.vault.outbox.watch().reachable
    # Had the PACS come back during an emergency-mode run, the watch would still send nothing.
    env.vault.read_only = True
    assert not env.vault.outbox.watch().reachable


def test_the_workstation_starts_in_emergency_mode_and_says_so(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    assert cli_users.login("rad").returncode == 0
    shot = cli("gui", "--emergency", "--screenshot", str(tmp_path / "screen.png"),
               extra_env={"QT_QPA_PLATFORM": "offscreen"})
    assert shot.returncode == 0, shot.stderr
    assert cli_users.login("admin").returncode == 0
    added = cli.json("user", "add", "po", "--role", "privacy-officer",
                     extra_env={"CUSTODIAN_PASSWORD": "privacy officer pass phrase"})
    cli_users.codes["po"] = Codes.of(added["totp_uri"])
    cli_users.passwords["po"] = "privacy officer pass phrase"
    assert cli_users.login("po").returncode == 0
    alerts = cli.json("audit", "show", "--type", "security-alert")
    assert any(EMERGENCY_ALERT in json.dumps(record) for record in alerts)

