"""The prior's report comes with the prior: a C-GET from Orthanc brings a study's structured and
PDF reports with its images, and they are read from the cache when the PACS is down."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.report import PdfReport, StructuredReport
from app.net.nodes import Node
from tests.conftest import VaultEnv
from tests.imaging import reports
from tests.peers.dcmtk import storescu
from tests.peers.orthanc import AET, Orthanc

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("storescu") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")
PATIENT = Patient("PID-REPORTS", "Prior^Paula")


def test_a_fetched_prior_brings_its_reports_which_stay_readable_in_downtime(env: VaultEnv,
                                                                           tmp_path: Path) -> None:
    current = ct_study(PATIENT, slices=1, size=16, date="20260301")
    prior = ct_study(PATIENT, slices=1, size=16, date="20250101")
    sent = [*prior, reports.enhanced(prior[0]), reports.pdf_report(prior[0], "Prior impression")]
    files = []
    for i, ds in enumerate(sent):
        files.append(tmp_path / f"{i}.dcm")
        files[-1].write_bytes(to_bytes(ds))
    peer = Orthanc(tmp_path / "orthanc", known={"custodian": ("CUSTODIAN", 11112),
                                                "modality": ("STORESCU", 104)})
    peer.start()
    try:
        assert storescu(peer.port, files, called=AET).returncode == 0
        env.vault.nodes.add(env.login("admin"), Node("pacs", AET, "127.0.0.1", peer.port))
        env.vault.intake.import_bytes(env.login("tech"), [("c", to_bytes(current[0]))])
        prior_uid, current_uid = str(prior[0].StudyInstanceUID), str(current[0].StudyInstanceUID)
        assert env.vault.cache.prefetch_priors(env.login("rad"), current_uid) == [prior_uid]
    finally:
        peer.stop()

    env.vault.enter_emergency_mode()  # (the PACS is down)
    found = env.vault.reading.reports(env.login("rad"), prior_uid)
    (structured,) = [r for r in found if isinstance(r, StructuredReport)]
    (pdf,) = [r for r in found if isinstance(r, PdfReport)]
    assert "Long axis: 23.5 mm" in structured.text()
    assert pdf.data == reports.pdf_bytes("Prior impression")
