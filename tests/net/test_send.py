"""Sending to Orthanc: every instance's status checked; while the PACS is down sends wait and go
out when it is back; refusals that waiting will not mend are said at once."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.errors import NotPermitted
from app.net.association import PeerError
from app.net.nodes import Node
from app.net.watch import PacsStatus
from app.security.roles import Role
from tests.conftest import CliUsers, VaultEnv, study_bytes, write_study
from tests.peers.orthanc import AET, Orthanc
from tests.peers.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None,
                                reason="Orthanc is not installed (installer/setup.sh does)")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the module (each test has its own vault and patient); tests that stop it
    start it again."""
    peer = Orthanc(tmp_path_factory.mktemp("send") / "orthanc", known={"custodian": ("CUSTODIAN", 11112)})
    peer.start()
    yield peer
    peer.stop()


def _count(pacs: Orthanc, patient_id: str) -> int:
    """Instances the PACS holds for one patient."""
    total = 0
    for patient in pacs.rest("/patients?expand"):
        if patient["MainDicomTags"].get("PatientID") == patient_id:
            total += len(pacs.rest(f"/patients/{patient['ID']}/instances"))
    return total


def _study(env: VaultEnv, patient: Patient, slices: int = 5) -> str:
    items = study_bytes(patient, slices=slices, size=32)
    env.vault.intake.import_bytes(env.login("tech"), items)
    return str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1])).StudyInstanceUID)


def test_send_stores_every_instance_at_the_pacs(env: VaultEnv, pacs: Orthanc) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", pacs.port))
    study = _study(env, Patient("PID-SEND", "Sent^Sam"))
    steps: list[tuple[int, int]] = []
    result = env.vault.outbox.send(env.login("tech"), "pacs", study, lambda d, t: steps.append((d, t)))
    assert not result.queued and len(result.report.sent) == 5 and result.report.failed == {}
    assert steps[-1] == (5, 5)
    assert _count(pacs, "PID-SEND") == 5
    (event,) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.SEND, limit=1))
    assert event.user == "tech" and event.detail["sent"] == 5 and event.patients == ("PID-SEND",)


def test_sends_wait_while_the_pacs_is_down_and_go_when_it_is_back(env: VaultEnv, pacs: Orthanc) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", pacs.port))
    first = _study(env, Patient("PID-DOWN1", "Down^One"))
    pacs.stop()
    queued = env.vault.outbox.send(env.login("tech"), "pacs", first)
    assert queued.queued and "connection refused" in (queued.error or "")
    # Reading and importing go on while the PACS is down, and another send queues behind it.
    second = _study(env, Patient("PID-DOWN2", "Down^Two"), slices=3)
    assert env.vault.reading.open_series(env.login("rad"),
                                         env.vault.reading.series(env.login("rad"), first)[0].series_uid)
    assert env.vault.outbox.send(env.login("tech"), "pacs", second).queued
    assert env.vault.outbox.flush(env.login("tech")) == 0  # still down: they keep waiting
    assert [w["attempts"] for w in env.vault.outbox.waiting(env.login("tech"))] == [1, 1]
    pacs.start()
    assert env.vault.outbox.flush(env.login("tech")) == 2
    assert env.vault.outbox.waiting(env.login("tech")) == []
    assert _count(pacs, "PID-DOWN1") == 5 and _count(pacs, "PID-DOWN2") == 3


def test_refusals_are_not_queued(env: VaultEnv, pacs: Orthanc) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", "NOT-ORTHANC", "127.0.0.1", pacs.port))
    study = _study(env, Patient("PID-REFUSED", "Refused^Rolf"))
    with pytest.raises(PeerError, match="called AE title not recognised"):
        env.vault.outbox.send(env.login("tech"), "pacs", study)
    assert env.vault.outbox.waiting(env.login("tech")) == []


def test_restricted_patients_need_break_glass_to_send(env: VaultEnv, pacs: Orthanc) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", pacs.port))
    study = _study(env, Patient("PID-VIP", "Vip^Vera"))
    env.add("po", Role.PRIVACY_OFFICER)
    env.vault.admin.restrict_patient(env.login("po"), "PID-VIP")
    with pytest.raises(NotPermitted):
        env.vault.outbox.send(env.login("tech"), "pacs", study)
    assert _count(pacs, "PID-VIP") == 0


def test_cli_send_and_outbox(cli_users: CliUsers, pacs: Orthanc, tmp_path: Path) -> None:
    cli = cli_users.cli
    assert cli("node", "add", "pacs", "--aet", AET, "--host", "127.0.0.1",
               "--port", str(pacs.port)).returncode == 0
    cli_users.login("tech")
    write_study(tmp_path / "ct", Patient("PID-CLI", "Cli^Carla"), slices=4, size=32)
    assert cli("import", str(tmp_path / "ct")).returncode == 0
    (study,) = cli.json("studies", "--patient", "PID-CLI")
    sent = cli.json("send", "pacs", study["study_uid"])
    assert sent["sent"] == 4 and not sent["queued"]
    assert cli.json("outbox") == {"sent": 0, "waiting": []}


def test_the_pacs_watch_sees_downtime_and_sends_the_queue_on_return(env: VaultEnv, pacs: Orthanc) -> None:
    assert env.vault.outbox.watch().node is None  # no PACS node yet: nothing to watch
    env.vault.nodes.add(env.login("admin"), Node("modality", "CT01", "127.0.0.1", 9))
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", pacs.port))
    env.vault.admin.set_policy(env.login("admin"), "pacs_node", "pacs")
    assert env.vault.outbox.watch() == PacsStatus("pacs", True, 0)
    study = _study(env, Patient("PID-WATCH", "Watch^Wanda"), slices=2)
    pacs.stop()
    assert env.vault.outbox.send(env.login("tech"), "pacs", study).queued
    down = env.vault.outbox.watch()
    assert (down.reachable, down.waiting) == (False, 1) and "connection refused" in (down.error or "")
    pacs.start()
    assert env.vault.outbox.watch() == PacsStatus("pacs", True, 0)
    assert _count(pacs, "PID-WATCH") == 2


def test_storage_commitment_lets_a_sent_study_leave_the_cache_later(env: VaultEnv, tmp_path: Path) -> None:
    port = free_port()  # our SCP, where Orthanc sends its commitment report
    peer = Orthanc(tmp_path / "committing", known={"custodian": ("CUSTODIAN", port)})
    peer.start()
    admin = env.login("admin")
    env.vault.admin.set_policy(admin, "scp_port", str(port))
    env.vault.nodes.add(admin, Node("pacs", AET, "127.0.0.1", peer.port))
    scp = env.vault.pacs.storage_scp(host="127.0.0.1")
    scp.start()
    try:
        study = _study(env, Patient("PID-COMMIT", "Commit^Carl"), slices=3)
        assert not env.vault.outbox.send(env.login("tech"), "pacs", study).queued

        def at_pacs() -> int:
            return env.vault._core.query("SELECT at_pacs FROM studies WHERE uid = ?", (study,))[0][0]

        deadline = time.monotonic() + 20
        while not at_pacs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert at_pacs() == 1
        (row,) = env.vault._core.query("SELECT committed, failed FROM commitments WHERE study_uid = ?",
                                       (study,))
        assert row == (3, 0)
        (event,) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.COMMITMENT))
        assert event.user == "dicom:pacs" and event.detail == {"committed": 3, "failed": 0}
    finally:
        scp.stop()
        peer.stop()
