"""Query/retrieve with Orthanc: C-FIND under minimum necessary, C-GET straight into the vault."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.net import query
from app.net.association import PeerError
from app.net.nodes import Node
from app.security.roles import Role
from app.store.faults import StorageFault
from app.store.records import ImportReport
from tests.conftest import CliUsers, VaultEnv, write_study
from tests.peers.dcmtk import storescu
from tests.peers.orthanc import AET, Orthanc
from tests.peers.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("storescu") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")
PATIENT = Patient("PID-QR", "Remote^Rita")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, list[str]]]:
    """Orthanc holding two CT studies of one patient (sent with storescu), and their UIDs."""
    folder = tmp_path_factory.mktemp("qr")
    peer = Orthanc(folder / "orthanc", known={"custodian": ("CUSTODIAN", 11112),
                                              "modality": ("STORESCU", 104)})
    peer.start()
    uids = []
    for n in range(2):
        files = write_study(folder / f"study{n}", PATIENT, slices=6, size=32)
        uids.append(str(pydicom.dcmread(files[0]).StudyInstanceUID))
        sent = storescu(peer.port, files, called=AET)
        assert sent.returncode == 0, sent.stderr
    yield peer, uids
    peer.stop()


@pytest.fixture
def qr_env(env: VaultEnv, pacs: tuple[Orthanc, list[str]]) -> VaultEnv:
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", pacs[0].port))
    return env


def test_query_finds_the_patients_studies_with_what_the_role_may_see(
        qr_env: VaultEnv, pacs: tuple[Orthanc, list[str]]) -> None:
    found = qr_env.vault.pacs.query(qr_env.login("rad"), "pacs", patient_id="PID-QR")
    assert sorted(s.study_uid for s in found) == sorted(pacs[1])
    assert {s.patient_name for s in found} == {"Remote^Rita"} and {s.instances for s in found} == {6}
    assert {s.modalities for s in found} == {"CT"}
    assert qr_env.vault.pacs.query(qr_env.login("rad"), "pacs", patient_id="NO-SUCH-ID") == []
    qr_env.vault.pacs.retrieve(qr_env.login("rad"), "pacs", pacs[1][0])
    qr_env.add("po", Role.PRIVACY_OFFICER)
    qr_env.vault.admin.restrict_patient(qr_env.login("po"), "PID-QR")  # a VIP here: nothing shown
    hidden = qr_env.vault.pacs.query(qr_env.login("tech"), "pacs", patient_id="PID-QR")
    assert hidden and all(s.patient_name is None and s.patient_id is None for s in hidden)
    (event, *_) = qr_env.vault._gate._audit.records(AuditQuery(event_type=EventType.QUERY_PACS))
    assert event.user == "tech" and event.patients == ("PID-QR",)


def test_retrieve_brings_the_study_into_the_vault(qr_env: VaultEnv, pacs: tuple[Orthanc, list[str]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "BATCH", 4)  # one batch stored while the next arrives, the last at the end
    steps: list[tuple[int, int | None]] = []
    report = qr_env.vault.pacs.retrieve(qr_env.login("rad"), "pacs", pacs[1][0],
                                   lambda done, total: steps.append((done, total)))
    assert (report.received, report.imported, report.refused, report.failed_at_pacs) == (6, 6, [], 0)
    assert steps and steps[-1][0] == 6
    (study,) = qr_env.vault.reading.studies(qr_env.login("rad"), "PID-QR")
    assert study.study_uid == pacs[1][0] and study.instances == 6
    again = qr_env.vault.pacs.retrieve(qr_env.login("rad"), "pacs", pacs[1][0])
    assert (again.imported, again.duplicates) == (0, 6)
    (event, *_) = qr_env.vault._gate._audit.records(AuditQuery(event_type=EventType.RETRIEVE))
    assert event.user == "rad" and event.studies == (pacs[1][0],) and event.detail["received"] == 6
    assert qr_env.vault.admin.verify(qr_env.login("tech")).ok


def test_a_batch_the_disk_refused_mid_retrieve_fails_the_retrieve(pacs: tuple[Orthanc, list[str]],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The storing thread's fault (a full disk: no peer produces it) is not lost behind the next batch:
    later instances are refused and the retrieve ends in the fault, not in a report of success."""
    monkeypatch.setattr(query, "BATCH", 2)
    stored: list[int] = []

    def store(batch: list[tuple[str, bytes]]) -> ImportReport:
        if not stored:
            stored.append(0)
            raise StorageFault("The instances were not stored", "the disk is full")
        stored.append(len(batch))
        return ImportReport(imported=len(batch))

    node = Node("pacs", AET, "127.0.0.1", pacs[0].port)
    with pytest.raises(StorageFault, match="the disk is full"):
        query.get_study(node, "CUSTODIAN", pacs[1][0], store)
    assert sum(stored) < 6


def test_pacs_down_is_said_plainly(qr_env: VaultEnv) -> None:
    qr_env.vault.nodes.add(qr_env.login("admin"), Node("down", AET, "127.0.0.1", 9))
    with pytest.raises(PeerError, match="nothing is listening"):
        qr_env.vault.pacs.query(qr_env.login("rad"), "down", patient_id="PID-QR")


def test_cli_query_and_retrieve(cli_users: CliUsers, pacs: tuple[Orthanc, list[str]]) -> None:
    cli = cli_users.cli
    assert cli("node", "add", "pacs", "--aet", AET, "--host", "127.0.0.1",
               "--port", str(pacs[0].port)).returncode == 0
    cli_users.login("tech")
    found = cli.json("query", "pacs", "--patient", "PID-QR")
    assert sorted(s["study_uid"] for s in found) == sorted(pacs[1])
    retrieved = cli.json("retrieve", "pacs", pacs[1][1])
    assert retrieved["received"] == 6 and retrieved["imported"] == 6
    assert [s["study_uid"] for s in cli.json("studies", "--patient", "PID-QR")] == [pacs[1][1]]


def test_move_sends_the_study_to_our_own_scp(env: VaultEnv, tmp_path: Path) -> None:
    port = free_port()  # where Orthanc is told this workstation listens
    peer = Orthanc(tmp_path / "orthanc", known={"custodian": ("CUSTODIAN", port),
                                                "modality": ("STORESCU", 104)})
    peer.start()
    try:
        files = write_study(tmp_path / "ct", Patient("PID-MOVE", "Moved^Mona"), slices=3, size=32)
        assert storescu(peer.port, files, called=AET).returncode == 0
        admin = env.login("admin")
        env.vault.admin.set_policy(admin, "scp_port", str(port))
        env.vault.nodes.add(admin, Node("pacs", AET, "127.0.0.1", peer.port))
        study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        report = env.vault.pacs.retrieve(env.login("rad"), "pacs", study_uid, move=True)
        assert (report.received, report.imported, report.failed_at_pacs, report.by_move) == (3, 3, 0, True)
        assert report.summary() == "Retrieved 3 image(s): 3 new, 0 already here."
        (study,) = env.vault.reading.studies(env.login("rad"), "PID-MOVE")
        assert study.instances == 3
        events = env.vault._gate._audit.records(AuditQuery(user=f"dicom:{AET}", event_type=EventType.IMPORT))
        assert sum(e.detail["instances"] for e in events) == 3  # stored by the SCP, naming the PACS
    finally:
        peer.stop()
