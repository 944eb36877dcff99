"""Priors come from the PACS before the reader asks; the cache keeps to its budget without ever
dropping what only this workstation holds, what was just read, or what a reader pinned."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study, mr_study, to_bytes
from app.net.nodes import Node
from tests.conftest import VaultEnv
from tests.peers.dcmtk import storescu
from tests.peers.orthanc import AET, Orthanc

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("storescu") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")
PATIENT = Patient("PID-PRIOR", "Prior^Petra")


def _save(folder: Path, datasets: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, ds in enumerate(datasets):
        paths.append(folder / f"{i}.dcm")
        paths[-1].write_bytes(to_bytes(ds))
    return paths


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, dict[str, list[Dataset]]]]:
    """The patient's studies at the PACS: today's chest CT, chest CT, head CT and MR priors, and a
    later CT."""
    studies = {
        "current": ct_study(PATIENT, slices=2, size=256, date="20260301"),
        "ct-prior": ct_study(PATIENT, slices=2, size=256, date="20250101"),
        "head-ct": ct_study(PATIENT, slices=2, size=256, date="20260201", body_part="HEAD",
                            description="CT HEAD"),
        "mr-prior": mr_study(PATIENT, slices=2, size=256, date="20251201"),
        "old-ct": ct_study(PATIENT, slices=2, size=256, date="20200101"),
        "later": ct_study(PATIENT, slices=2, size=256, date="20270101"),
    }
    tmp_path = tmp_path_factory.mktemp("history")
    peer = Orthanc(tmp_path / "orthanc", known={"custodian": ("CUSTODIAN", 11112),
                                                "modality": ("STORESCU", 104)})
    peer.start()
    for name, datasets in studies.items():
        assert storescu(peer.port, _save(tmp_path / name, datasets), called=AET).returncode == 0
    yield peer, studies
    peer.stop()


def _uid(datasets: list[Dataset]) -> str:
    return str(datasets[0].StudyInstanceUID)


def test_opening_a_study_fetches_the_most_relevant_priors(
        env: VaultEnv, history: tuple[Orthanc, dict[str, list[Dataset]]]) -> None:
    peer, studies = history
    env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", peer.port))
    current = studies["current"]
    env.vault.intake.import_bytes(env.login("tech"),
                                  [(f"c{i}", to_bytes(ds)) for i, ds in enumerate(current)])
    fetched = env.vault.cache.prefetch_priors(env.login("rad"), _uid(current))
    # Same modality and body part first (the chest CTs, newest first, before the newer head CT);
    # then the head CT (same modality) before the MR; the later CT is no prior.
    assert fetched == [_uid(studies["ct-prior"]), _uid(studies["old-ct"])]
    cached = {s.study_uid for s in env.vault.reading.studies(env.login("rad"), PATIENT.patient_id)}
    assert cached == {_uid(current), *fetched}
    events = env.vault._gate._audit.records(AuditQuery(user="prefetch for rad",
                                                       event_type=EventType.RETRIEVE))
    assert {e.studies[0] for e in events} == set(fetched)
    assert env.vault.cache.prefetch_priors(env.login("rad"), _uid(current)) == [_uid(studies["head-ct"]),
                                                               _uid(studies["mr-prior"])]


def test_the_cache_budget_drops_only_what_the_pacs_holds(
        env: VaultEnv, history: tuple[Orthanc, dict[str, list[Dataset]]]) -> None:
    peer, studies = history
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("pacs", AET, "127.0.0.1", peer.port))
    env.vault.admin.set_policy(admin, "prefetch_priors", "3")
    local_only = ct_study(Patient("PID-LOCAL", "Local^Lotte"), slices=2, size=16)
    env.vault.intake.import_bytes(env.login("tech"),
                                  [(f"l{i}", to_bytes(ds)) for i, ds in enumerate(local_only)])
    current = studies["current"]
    env.vault.intake.import_bytes(env.login("tech"),
                                  [(f"c{i}", to_bytes(ds)) for i, ds in enumerate(current)])
    fetched = env.vault.cache.prefetch_priors(env.login("rad"), _uid(current))
    assert len(fetched) == 3
    rad = env.login("rad")
    env.vault.cache.pin_study(rad, fetched[0])
    recent = fetched[1]
    env.vault.reading.open_series(rad, env.vault.reading.series(rad, recent)[0].series_uid)  # read just now
    with env.vault._core.transaction():  # the remaining prior was last used long ago
        env.vault._core.conn.execute("UPDATE studies SET last_opened = 1 WHERE uid = ?", (fetched[2],))
    env.vault.admin.set_policy(admin, "cache_budget_mb", "1")  # far less than the cache holds
    assert env.vault.cache.evict_to_budget(env.login("tech")) == [fetched[2]]
    left = {s.study_uid for s in env.vault.reading.studies(rad)}
    assert left == {_uid(local_only), _uid(current), fetched[0], recent}
    (dropped,) = env.vault._gate._audit.records(AuditQuery(user="cache", event_type=EventType.SHRED))
    assert dropped.studies == (fetched[2],) and "least recently used" in dropped.detail["reason"]
    assert env.vault.admin.verify(env.login("tech")).ok


def test_a_study_arriving_from_a_modality_brings_its_priors(
        env: VaultEnv, history: tuple[Orthanc, dict[str, list[Dataset]]], tmp_path: Path) -> None:
    peer, studies = history
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("pacs", AET, "127.0.0.1", peer.port))
    env.vault.nodes.add(admin, Node("ct-scanner", "STORESCU", "127.0.0.1", 104))
    # with modalities among the nodes, say which is the PACS
    env.vault.admin.set_policy(admin, "pacs_node", "pacs")
    scp = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    scp.start()
    try:
        today = ct_study(PATIENT, slices=2, size=16, date="20260401")
        assert storescu(scp.port, _save(tmp_path / "today", today), called="CUSTODIAN").returncode == 0
        wanted = {_uid(today), _uid(studies["current"]), _uid(studies["ct-prior"])}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cached = {s.study_uid for s in env.vault.reading.studies(env.login("rad"), PATIENT.patient_id)}
            if cached >= wanted:
                break
            time.sleep(0.2)
        assert cached == wanted  # the two newest CTs before today's
    finally:
        scp.stop()
