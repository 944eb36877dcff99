"""The PACS panel against a real Orthanc: search, retrieve into the cache, send, and a clean lock."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pydicom
import pytest
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient
from app.net.nodes import Node
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.ui.main_window import MainWindow
from app.vault import Vault
from tests.conftest import write_study
from tests.peers.dcmtk import storescu
from tests.peers.orthanc import AET, Orthanc
from tests.ui.conftest import USER_PASSWORD, shown_texts

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("storescu") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")
REMOTE = Patient("PID-PANEL", "Panel^Paula")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, vault: Vault,
         admin_session: Session) -> Iterator[tuple[Orthanc, str]]:
    folder = tmp_path_factory.mktemp("panel")
    peer = Orthanc(folder / "orthanc", known={"custodian": ("CUSTODIAN", 11112),
                                              "modality": ("STORESCU", 104)})
    peer.start()
    files = write_study(folder / "ct", REMOTE, slices=4, size=32)
    assert storescu(peer.port, files, called=AET).returncode == 0
    vault.nodes.add(admin_session, Node("pacs", AET, "127.0.0.1", peer.port))
    yield peer, str(pydicom.dcmread(files[0]).StudyInstanceUID)
    vault.nodes.remove(admin_session, "pacs")
    peer.stop()


def test_search_and_retrieve_from_the_panel(qtbot: QtBot, session: Session, pacs: tuple[Orthanc, str],
                                            open_window: Callable[..., MainWindow]) -> None:
    window = open_window(session)
    panel = window.pacs_panel
    assert window.sources.isTabVisible(1) and "pacs" in panel.node_label.text()
    window.sources.setCurrentIndex(1)
    panel.patient_edit.setText(REMOTE.patient_id)
    panel.search()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 1, timeout=30_000)
    assert panel.model.index(0, 0).data() == "Panel, Paula" and panel.model.index(0, 5).data() == "4"
    panel.table.selectRow(0)
    assert panel.retrieve_button.isEnabled()
    panel.retrieve()
    qtbot.waitUntil(lambda: panel.summary.text().startswith("Retrieved"), timeout=60_000)
    assert panel.summary.text().startswith("Retrieved 4 image(s): 4 new")
    assert window.sources.currentIndex() == 0 and window.browser.current_study_uid() == pacs[1]

    window.lock()
    assert panel.model.rowCount() == 0 and REMOTE.patient_id not in " ".join(shown_texts(window))


def test_send_action_reports_in_the_status_bar(qtbot: QtBot, vault: Vault, session: Session,
                                               admin_session: Session, pacs: tuple[Orthanc, str],
                                               ct_datasets: list,
                                               open_window: Callable[..., MainWindow]) -> None:
    assert not open_window(session).send_action.isVisible()  # radiologists read
    enrolment = vault.admin.add_user(admin_session, "sender", Role.TECHNOLOGIST, USER_PASSWORD)
    tech = vault.accounts.login("sender", USER_PASSWORD, totp.current_code(enrolment.totp_secret))[1]
    window = open_window(tech)
    assert window.send_action.isVisible()
    before = pacs[0].rest("/statistics")["CountInstances"]
    window.browser.select_study(str(ct_datasets[0].StudyInstanceUID))
    window.send_action.trigger()
    qtbot.waitUntil(lambda: window.statusBar().currentMessage().startswith("Sent"), timeout=60_000)
    assert window.statusBar().currentMessage() == f"Sent {len(ct_datasets)} image(s) to pacs."
    assert pacs[0].rest("/statistics")["CountInstances"] == before + len(ct_datasets)
