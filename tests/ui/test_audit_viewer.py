"""The privacy officer's audit viewer: filters, reports, verification, and nothing left on a lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pytestqt.qtbot import QtBot

from app.audit.events import EventType
from app.audit.report import AuditQuery, ReportKind
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.ui.audit_viewer import AuditViewer
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.ui.conftest import PATIENT, USER_PASSWORD, shown_texts


@pytest.fixture(scope="module")
def officer(vault: Vault, admin_session: Session) -> Session:
    enrolment = vault.admin.add_user(admin_session, "auditor", Role.PRIVACY_OFFICER, USER_PASSWORD)
    return vault.accounts.login("auditor", USER_PASSWORD, totp.current_code(enrolment.totp_secret))[1]


def _column(viewer: AuditViewer, title: str) -> list[str]:
    column = [c.title for c in viewer.model.columns].index(title)
    return [viewer.model.index(row, column).data() for row in range(viewer.model.rowCount())]


def test_filters_show_who_opened_a_patient(qtbot: QtBot, vault: Vault, officer: Session, session: Session,
                                           ct_datasets: list[Dataset]) -> None:
    vault.reading.open_series(session, ct_datasets[0].SeriesInstanceUID)  # the radiologist reads
    viewer = AuditViewer(vault, officer)
    qtbot.addWidget(viewer)
    viewer.show()
    viewer.patient_edit.setText(PATIENT.patient_id)
    viewer.type_box.setCurrentIndex(viewer.type_box.findData(EventType.INSTANCES_READ.value))
    viewer.search()
    # Other tests in this session's vault read the same patient, so the expected readers come from
    # the trail itself; the officer, who never opened an image, must not be among them.
    readers = {r.user for r in vault._gate._audit.records(AuditQuery(patient=PATIENT.patient_id,
                                                                 event_type=EventType.INSTANCES_READ))}
    users = _column(viewer, "User")
    assert "rad" in users and set(users) == readers and "auditor" not in readers
    assert set(_column(viewer, "Patients")) == {PATIENT.patient_id}
    assert "event(s)" in viewer.summary.text()
    assert viewer.patient_report_button.isEnabled() and not viewer.user_report_button.isEnabled()

    # The search itself is in the trail, naming the patient it was about.
    (read,) = vault._gate._audit.records(AuditQuery(user="auditor", event_type=EventType.AUDIT_READ, limit=1))
    assert read.patients == (PATIENT.patient_id,)


def test_report_export_and_verification(qtbot: QtBot, vault: Vault, officer: Session, tmp_path: Path,
                                        ct_datasets: list[Dataset]) -> None:
    viewer = AuditViewer(vault, officer)
    qtbot.addWidget(viewer)
    viewer.show()
    viewer.patient_edit.setText(PATIENT.patient_id)
    target = tmp_path / "access.csv"
    viewer.save_report(ReportKind.PATIENT, target)
    assert target.read_text().startswith(f"# Patient access report: {PATIENT.patient_id}")
    assert "written to access.csv" in viewer.summary.text()
    viewer.save_report(ReportKind.PATIENT, tmp_path / "access.doc")
    assert ".csv or .pdf" in viewer.error_label.text()
    viewer.verify()
    assert viewer.summary.text().startswith("Audit trail intact")


def test_the_officer_starts_in_the_trail_and_a_lock_drops_it(qtbot: QtBot, vault: Vault, officer: Session,
                                                             ct_datasets: list[Dataset]) -> None:
    window = MainWindow(vault, officer)
    qtbot.addWidget(window)
    window.show()
    window.refresh()
    viewer = window.findChild(AuditViewer)
    assert viewer is not None and viewer.isVisible() and viewer.model.rowCount() > 0
    assert window.user_menu.audit_action.isVisible()
    window.lock()
    qtbot.waitUntil(lambda: window.findChild(AuditViewer) is None)  # closed and deleted
    assert PATIENT.patient_id not in " ".join(shown_texts(window))


def test_readers_have_no_audit_trail_menu(qtbot: QtBot, vault: Vault, session: Session) -> None:
    window = MainWindow(vault, session)
    qtbot.addWidget(window)
    assert not window.user_menu.audit_action.isVisible()
    assert window.show_audit_trail() is not None  # and should they reach it anyway, the vault refuses
    viewer = window.findChild(AuditViewer)
    assert "may not read the audit trail" in viewer.error_label.text()
    assert viewer.model.rowCount() == 0
