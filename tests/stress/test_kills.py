"""kill -9 of the importer, the storage SCP, the exporter and the workstation service at random
moments (a few each; the long runner, ``python -m tests.stress.run``, does a hundred)."""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study
from app.net.nodes import Node
from tests.stress.kills import (
    SENDER_AE,
    Station,
    Tally,
    _Sender,
    _start_scp,
    kill_exports,
    kill_imports,
    kill_scps,
)
from tests.stress.service_kills import ServiceStation, kill_service


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    s = Station(tmp_path / "home")
    yield s
    s.close()


def _clean(tally: Tally) -> None:
    assert (tally.lost, tally.broken_chain, tally.leftovers) == (0, 0, 0), tally.problems


def test_importer_killed_at_random_moments(station: Station, tmp_path: Path) -> None:
    tally = kill_imports(station, tmp_path, iterations=5, rng=random.Random(7))
    _clean(tally)
    assert tally.kills == 5 and tally.mid_work >= 1, tally  # at least one kill landed mid-import


@pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed")
def test_storage_scp_killed_while_receiving(station: Station) -> None:
    tally = kill_scps(station, iterations=4, rng=random.Random(8))
    _clean(tally)
    assert tally.kills == 4 and tally.mid_work >= 1, tally


@pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed")
def test_what_was_acknowledged_while_the_index_was_held_survives_a_kill(station: Station) -> None:
    """The SCP answers once an instance is journaled: with the vault's write lock held by another
    process its indexer waits, yet every send is answered; killed then, nothing answered is lost."""
    station.vault.nodes.add(station.env.login("admin"), Node("killsender", SENDER_AE, "127.0.0.1", 104))
    first, *rest = ct_study(Patient("KILL-J", "Journaled^Jo"), slices=6, size=64)
    process, port = _start_scp(station)
    try:
        _Sender(port, [first]).run()  # (its study's data key is kept before the lock is taken)
        with station.vault._core.write_lock():
            sender = _Sender(port, rest)
            sender.start()
            deadline = time.monotonic() + 30
            while len(sender.acknowledged) < len(rest) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(sender.acknowledged) == len(rest)  # answered, none indexed yet
            assert station.instances(str(first.StudyInstanceUID)) == {str(first.SOPInstanceUID)}
            process.send_signal(signal.SIGKILL)
            process.wait(30)
    finally:
        process.kill()
    station.recover()  # as the next start of the SCP does
    assert station.instances(str(first.StudyInstanceUID)) == {str(d.SOPInstanceUID) for d in [first, *rest]}
    imports = station.vault._gate._audit.records(
        AuditQuery(user=f"dicom:{SENDER_AE}", event_type=EventType.IMPORT))  # (in the sender's name)
    assert sum(e.detail["instances"] for e in imports if str(first.StudyInstanceUID) in e.studies) == 6
    tally = Tally("journal")
    station.check(tally)
    _clean(tally)


def test_exporter_killed_at_random_moments(station: Station, tmp_path: Path) -> None:
    tally = kill_exports(station, tmp_path, iterations=4, rng=random.Random(9))
    _clean(tally)
    assert tally.kills == 4, tally


def test_service_killed_while_receiving_and_importing_and_a_client_mid_request(tmp_path: Path) -> None:
    station = ServiceStation(tmp_path / "service" / "home")
    try:
        tally = kill_service(station, tmp_path, iterations=3, rng=random.Random(10))
    finally:
        station.close()
    _clean(tally)
    assert tally.kills == 4 and tally.acknowledged > 0, tally
