"""Anomaly rules raise one Security Alert per user, rule and window, as events are written."""

from __future__ import annotations

from datetime import datetime

import pydicom

from app.demo.studies import Patient
from app.security.roles import Role
from tests.conftest import VaultEnv, study_bytes


def _alerts(env: VaultEnv, rule: str) -> list[dict[str, object]]:
    return [r for r in env.vault._gate._audit.records()
            if r.type == "security-alert" and r.detail["alert"] == rule]


def _series(items: list[tuple[str, bytes]]) -> str:
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1])).SeriesInstanceUID


def test_excessive_access_alerts_once(env: VaultEnv) -> None:
    env.vault.admin.set_policy(env.login("admin"), "anomaly_patients_per_hour", "3")
    studies = [study_bytes(Patient(f"PID-X{i}", "Many^Patients"), slices=1, size=8) for i in range(6)]
    env.vault.intake.import_bytes(env.login("tech"), [item for s in studies for item in s])
    rad = env.login("rad")
    for items in studies[:3]:
        env.vault.reading.open_series(rad, _series(items))
    assert _alerts(env, "excessive access") == []
    for items in studies[3:]:
        env.vault.reading.open_series(rad, _series(items))
    (alert,) = _alerts(env, "excessive access")
    assert alert.user == "rad" and alert.detail["patients_last_hour"] == 4
    assert env.vault._gate._audit.verify().ok


def test_off_hours_access_alerts_when_the_site_sets_office_hours(env: VaultEnv) -> None:
    items = study_bytes(slices=1, size=8)
    env.vault.intake.import_bytes(env.login("tech"), items)
    hour = datetime.now().astimezone().hour
    start, end = ((hour + 1) % 23, (hour + 1) % 23 + 1)  # an office window that excludes now
    admin = env.login("admin")
    env.vault.admin.set_policy(admin, "office_hours_end", str(end))
    env.vault.admin.set_policy(admin, "office_hours_start", str(start))
    rad = env.login("rad")
    env.vault.reading.open_series(rad, _series(items))
    env.vault.reading.open_series(rad, _series(items))
    (alert,) = _alerts(env, "access outside office hours")
    assert alert.user == "rad" and alert.patients == ("PID-0001",)


def test_opening_a_patient_of_ones_own_surname_alerts(env: VaultEnv) -> None:
    env.add("jtestperson", Role.RADIOLOGIST, full_name="Jo  Testperson")
    relative = study_bytes(Patient("PID-REL", "TESTPERSON^Quentin"), slices=1, size=8)
    stranger = study_bytes(Patient("PID-OTHER", "Other^Olga"), slices=1, size=8)
    env.vault.intake.import_bytes(env.login("tech"), relative + stranger)
    env.vault.reading.open_series(env.login("rad"), _series(relative))  # rad has no full name: no rule
    reader = env.login("jtestperson")
    env.vault.reading.open_series(reader, _series(stranger))
    assert _alerts(env, "access to a patient with the user's own surname") == []
    env.vault.reading.open_series(reader, _series(relative))
    (alert,) = _alerts(env, "access to a patient with the user's own surname")
    assert alert.user == "jtestperson" and alert.patients == ("PID-REL",)
