"""A study's reports from the vault and `report show`: read by the roles that view images, the
header blanked as the site narrows the role, one audited access, refused for a restricted patient
without break-glass, and there in emergency mode (the prior's report in downtime)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError, NotPermitted
from app.imaging.report import PdfReport, StructuredReport
from app.net.nodes import Node
from app.security import managed_policy
from app.security.roles import Role
from app.service.codec import decode, encode
from app.service.methods import METHODS
from app.vault import Vault
from tests.conftest import PASSPHRASE, CliUsers, VaultEnv
from tests.imaging import reports
from tests.security.test_managed_policy import site  # noqa: F401 (the fixture)


def _study(env: VaultEnv) -> pydicom.Dataset:
    """A two-image CT with a Basic Text SR, an Enhanced SR and a PDF report, imported."""
    images = ct_study(Patient("PID-R2", "Reportperson^Rolf"), slices=2, size=16)
    documents = [reports.basic_text(images[0]), reports.enhanced(images[0]),
                 reports.pdf_report(images[0], "Outside report")]
    items = [(f"mem-{i}", to_bytes(ds)) for i, ds in enumerate([*images, *documents])]
    assert env.vault.intake.import_bytes(env.login("tech"), items).imported == 5
    return images[0]


def _reads(env: VaultEnv, user: str) -> list:
    query = AuditQuery(user=user, event_type=EventType.INSTANCES_READ)
    return [r for r in env.vault._gate._audit.records(query) if "reports" in r.detail]


def test_the_roles_that_view_images_read_the_reports_and_each_read_is_audited(env: VaultEnv) -> None:
    image = _study(env)
    study_uid = image.StudyInstanceUID
    kept = env.vault.reading.series(env.login("rad"), study_uid)
    assert sorted(s.modality for s in kept) == ["CT", "DOC", "SR", "SR"]  # (kept, without pixels)

    found = env.vault.reading.reports(env.login("rad"), study_uid)
    assert sorted(type(r).__name__ for r in found) == ["PdfReport", "StructuredReport", "StructuredReport"]
    text = "\n".join(r.text() for r in found if isinstance(r, StructuredReport))
    assert "Long axis: 23.5 mm" in text and "Impression: Normal chest CT." in text
    (pdf,) = [r for r in found if isinstance(r, PdfReport)]
    assert pdf.data == reports.pdf_bytes("Outside report") and pdf.header.patient_id == "PID-R2"
    (read,) = _reads(env, "rad")
    assert read.studies == (study_uid,) and read.detail["reports"] == 3 and read.patients

    assert len(env.vault.reading.reports(env.login("tech"), study_uid)) == 3
    env.add("films", Role.LIBRARIAN)
    for user in ("admin", "films"):
        with pytest.raises(NotPermitted):
            env.vault.reading.reports(env.login(user), study_uid)
        assert _reads(env, user) == []
    with pytest.raises(CustodianError, match="not in the cache"):
        env.vault.reading.reports(env.login("rad"), "1.2.3.4")


def test_the_header_shows_only_what_the_site_lets_the_role_see(env: VaultEnv, site: tuple) -> None:  # noqa: F811
    policy, _, private = site
    image = _study(env)
    policy.write_bytes(managed_policy.sign({"visible_fields": {"technologist": ["patient ID"]}}, private))
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    env.sessions.clear()
    for found in env.vault.reading.reports(env.login("tech"), image.StudyInstanceUID):
        header = found.header
        assert header.patient_id == "PID-R2"
        assert header.patient_name is header.birth_date is header.sex is header.accession is None
        assert "Reportperson" not in found.text() and "PID-R2" in found.text()


def test_a_restricted_patient_needs_break_glass_and_reports_are_read_in_emergency_mode(env: VaultEnv) -> None:
    image = _study(env)
    env.add("privacy", Role.PRIVACY_OFFICER)
    env.vault.nodes.add(env.login("admin"), Node("pacs", "PACS", "127.0.0.1", 9))  # discard: nobody there
    env.vault.enter_emergency_mode()
    assert len(env.vault.reading.reports(env.login("rad"), image.StudyInstanceUID)) == 3

    env.vault.read_only = False
    env.vault.admin.restrict_patient(env.login("privacy"), "PID-R2", True)
    with pytest.raises(NotPermitted, match="restricted"):
        env.vault.reading.reports(env.login("rad"), image.StudyInstanceUID)
    assert _reads(env, "rad") == [_reads(env, "rad")[0]]  # (only the read before the restriction)


def test_report_show_prints_the_text_and_names_the_pdf(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    images = ct_study(Patient("PID-R3", "Reportperson^Ruth"), slices=1, size=16)
    for name, ds in (("ct", images[0]), ("sr", reports.comprehensive(images[0])),
                     ("pdf", reports.pdf_report(images[0], "Outside report"))):
        (tmp_path / f"{name}.dcm").write_bytes(to_bytes(ds))
    assert cli_users.login("tech").returncode == 0
    assert cli("import", *(str(tmp_path / f"{name}.dcm") for name in ("ct", "sr", "pdf"))).returncode == 0
    study_uid = images[0].StudyInstanceUID

    shown = cli("report", "show", study_uid)
    assert shown.returncode == 0, shown.stderr
    assert "Diameter: 8 mm" in shown.stdout and images[0].SOPInstanceUID in shown.stdout
    assert "Outside radiology report (Encapsulated PDF" in shown.stdout and "%PDF" not in shown.stdout
    as_json = cli.json("report", "show", study_uid)
    assert sorted(r["format"] for r in as_json) == ["PDF", "SR"]  # type: ignore[union-attr]

    assert cli_users.login("admin").returncode == 0
    refused = cli("report", "show", study_uid)
    assert refused.returncode == 3 and "Traceback" not in refused.stderr
    assert cli_users.login("rad").returncode == 0
    assert cli("report", "show", "1.2.3").returncode == 1


def test_the_reports_cross_the_workstation_service_as_they_are(env: VaultEnv) -> None:
    method = METHODS[("reading", "reports")]
    found = env.vault.reading.reports(env.login("rad"), _study(env).StudyInstanceUID)
    assert decode(encode(found), method.returns) == found
