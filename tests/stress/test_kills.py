"""kill -9 of the importer, the storage SCP, the exporter and the workstation service at random
moments (a few each; the long runner, ``python -m tests.stress.run``, does a hundred)."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stress.kills import Station, Tally, kill_exports, kill_imports, kill_scps
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
