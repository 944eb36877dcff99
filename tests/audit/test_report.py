"""The privacy officer's filters and reports: the right events, exported, and the reading audited."""

from __future__ import annotations

import csv
import io
import re
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery, ReportKind
from app.demo.studies import Patient
from app.errors import NotPermitted, UsageError
from app.security.roles import Role
from tests.audit.test_log import tamper
from tests.conftest import ADMIN_PASSWORD, Cli, Codes, VaultEnv, password_for, study_bytes


@pytest.fixture
def trail(env: VaultEnv) -> VaultEnv:
    env.add("privacy", Role.PRIVACY_OFFICER)
    tech = env.login("tech")
    env.vault.intake.import_bytes(tech, study_bytes(Patient("PID-A", "Alpha^Ann")))
    env.vault.intake.import_bytes(tech, study_bytes(Patient("PID-B", "Beta^Bob")))
    rad = env.login("rad")
    for study in env.vault.reading.studies(rad):
        for series in env.vault.reading.series(rad, study.study_uid):
            env.vault.reading.open_series(rad, series.series_uid)
    return env


def _pdf_text(data: bytes) -> str:
    """The text drawn on the pages, from the (deflated) content streams."""
    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            text.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            text.append(stream.decode("latin-1"))
    return "\n".join(text)


def test_filters_select_by_user_patient_type_and_time(trail: VaultEnv) -> None:
    audit = trail.vault._gate._audit
    reads_a = audit.records(AuditQuery(patient="PID-A", event_type=EventType.INSTANCES_READ))
    assert reads_a and all(r.patients == ("PID-A",) and r.user == "rad" for r in reads_a)
    tech = audit.records(AuditQuery(user="tech"))
    assert {r.type for r in tech} >= {"import", "login"} and all(r.user == "tech" for r in tech)
    future = datetime.now(UTC) + timedelta(hours=1)
    assert audit.records(AuditQuery(since=future)) == []
    assert len(audit.records(AuditQuery(until=future, limit=3))) == 3
    with pytest.raises(UsageError):
        AuditQuery(since=future, until=future - timedelta(minutes=1))


def test_patient_access_report_names_who_opened_the_patient(trail: VaultEnv) -> None:
    officer = trail.login("privacy")
    report = trail.vault.trail.report(officer, ReportKind.PATIENT, AuditQuery(patient="PID-B"))
    assert report.chain_ok and report.title == "Patient access report: PID-B"
    assert {r.type for r in report.records} >= {"import", "instances-accessed"}
    assert all("PID-B" in r.patients for r in report.records)

    rows = list(csv.reader(io.StringIO(report.to_csv())))
    assert rows[0] == ["# Patient access report: PID-B"]
    table = rows[rows.index(list(report.COLUMNS)) + 1:]
    assert {row[4] for row in table} == {"tech", "rad"} and len(table) == len(report.records)

    pdf = report.to_pdf()
    assert pdf.startswith(b"%PDF-")
    text = _pdf_text(pdf)
    assert "Patient access report: PID-B" in text and "instances-accessed" in text
    assert "verified intact" in text

    # Reading the trail is itself in the trail, naming the patient the report was about.
    (read,) = trail.vault._gate._audit.records(AuditQuery(user="privacy", event_type=EventType.AUDIT_READ,
                                                          limit=1))
    assert read.patients == ("PID-B",) and read.detail["report"] == "patient access"


def test_user_activity_report_and_a_damaged_chain_says_so(trail: VaultEnv) -> None:
    officer = trail.login("privacy")
    tamper(trail, "UPDATE audit SET record = replace(record, 'rad', 'rob') WHERE seq = 3")
    report = trail.vault.trail.report(officer, ReportKind.USER, AuditQuery(user="rad"))
    assert not report.chain_ok and any("WARNING" in line for line in report.header_lines())
    assert report.records and all(r.user == "rad" for r in report.records)
    with pytest.raises(UsageError, match="needs the user"):
        trail.vault.trail.report(officer, ReportKind.USER, AuditQuery(patient="PID-A"))


def test_other_roles_cannot_read_reports(trail: VaultEnv) -> None:
    with pytest.raises(NotPermitted):
        trail.vault.trail.report(trail.login("rad"), ReportKind.USER, AuditQuery(user="rad"))
    assert trail.vault._gate._audit.records(AuditQuery(event_type=EventType.ACCESS_REFUSED, limit=1))


def test_cli_report_writes_csv_and_pdf(cli: Cli, tmp_path: Path) -> None:
    init = cli.json("init", "--admin", "admin", extra_env={"CUSTODIAN_PASSWORD": ADMIN_PASSWORD})
    admin = Codes.of(init["totp_uri"])
    login = {"CUSTODIAN_USER": "admin", "CUSTODIAN_PASSWORD": ADMIN_PASSWORD}
    assert cli("login", extra_env={**login, "CUSTODIAN_TOTP": admin.next()}).returncode == 0
    added = cli.json("user", "add", "po", "--role", "privacy-officer",
                     extra_env={"CUSTODIAN_PASSWORD": password_for("po")})
    po = Codes.of(added["totp_uri"])
    assert cli("login", extra_env={"CUSTODIAN_USER": "po", "CUSTODIAN_PASSWORD": password_for("po"),
                                   "CUSTODIAN_TOTP": po.next()}).returncode == 0
    today = datetime.now().strftime("%Y-%m-%d")
    out_csv, out_pdf = tmp_path / "admin.csv", tmp_path / "admin.pdf"
    done = cli.json("audit", "report", "--user", "admin", "--since", today, "--until", today,
                    "--out", str(out_csv))
    assert done["chain_ok"] and done["records"] and out_csv.read_text().startswith("# User activity")
    assert cli("audit", "report", "--user", "admin", "--out", str(out_pdf)).returncode == 0
    assert out_pdf.read_bytes().startswith(b"%PDF-")
    wrong = cli("audit", "report", "--user", "admin", "--out", str(tmp_path / "x.txt"))
    assert wrong.returncode == 2 and ".csv or .pdf" in wrong.stderr
    both = cli("audit", "report", "--user", "admin", "--patient", "P1")
    assert both.returncode == 2
    shown = cli.json("audit", "show", "--user", "admin", "--type", "login", "--limit", "5")
    assert shown and all(r["user"] == "admin" and r["type"] == "login" for r in shown)
