"""The storage SCP under the site's intake limits: per association, and a deflated bomb sent over
DICOM refused as it inflates (issue 22, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from app.demo.studies import Patient, ct_study
from app.net.nodes import Node
from app.net.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, StorageScp
from tests.conftest import VaultEnv
from tests.stress.bombs import SENDER_AE, MiB, deflated_bomb, send_file


@pytest.fixture
def limited(env: VaultEnv) -> Iterator[StorageScp]:
    """An SCP for a site that takes at most two instances per association."""
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("sender", SENDER_AE, "127.0.0.1", 104))
    env.vault.admin.set_policy(admin, "intake_max_files", "2")
    server = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    server.start()
    yield server
    server.stop()


def _send(port: int, datasets: list[object]) -> list[int | None]:
    ae = AE(ae_title=SENDER_AE)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="CUSTODIAN")
    assert assoc.is_established
    try:
        return [getattr(assoc.send_c_store(ds), "Status", None) for ds in datasets]
    finally:
        assoc.release()


def test_an_association_may_send_no_more_than_the_site_allows(env: VaultEnv, limited: StorageScp) -> None:
    datasets = ct_study(Patient("PID-LIM", "Limited^Lars"), slices=3, size=16)
    assert _send(limited.port, datasets) == [SUCCESS, SUCCESS, OUT_OF_RESOURCES]
    assert _send(limited.port, datasets[2:]) == [SUCCESS]  # a new association, a new allowance
    (study,) = env.vault.reading.studies(env.login("rad"), "PID-LIM")
    assert study.instances == 3


def test_a_deflated_bomb_sent_over_dicom_is_refused(env: VaultEnv, limited: StorageScp,
                                                    tmp_path: Path) -> None:
    status, _ = send_file(limited.port, deflated_bomb(tmp_path / "bomb.dcm", pixel_bytes=64 * MiB))
    assert status == CANNOT_UNDERSTAND
    assert env.vault.reading.studies(env.login("rad")) == []
    assert env.vault.intake.quarantined(env.login("tech")) == []
    rows = env.vault._core.query("SELECT json_extract(record, '$.detail.why') FROM audit "
                                 "WHERE json_extract(record, '$.type') = 'quarantine'")
    assert [r[0] for r in rows] == ['["it would inflate to more than 200 times its compressed size (site '
                                    'policy intake_expansion_max): refused as a decompression bomb"]']
