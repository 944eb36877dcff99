"""Adding a DICOMweb node from the PACS panel, against Orthanc's DICOMweb plugin behind nginx
(tests/peers/dicomweb.py): the form's refusals, a wrong password's echo, and the node kept with its
secret in the vault and echoed in the words of ``custodian node echo``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from app.security.roles import Role
from app.ui.node_dialog import DicomWebNodeDialog
from app.ui.pacs_panel import PacsPanel
from tests.conftest import VaultEnv, make_env
from tests.peers.dicomweb import PASSWORD, USER, DicomWebPacs, available
from tests.peers.pki import Site
from tests.ui.conftest import answer, image_array


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomWebPacs]:
    if not available():
        pytest.skip("Orthanc's DICOMweb plugin and nginx are not installed (installer/setup.sh does)")
    folder = tmp_path_factory.mktemp("dicomweb-form")
    started = DicomWebPacs(folder / "pacs", Site(folder, "pacs.example"))
    started.start()
    yield started
    # SIGTERM at once; Orthanc's own shutdown (about 3 s) goes on while the next tests run
    threading.Thread(target=started.stop, name="orthanc-stop").start()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[VaultEnv]:
    e = make_env(tmp_path / "home")
    e.add("rad", Role.RADIOLOGIST)
    yield e
    e.vault.close()


def fill(dialog: DicomWebNodeDialog, url: str, *, ca: Path | None = None, auth: str = "",
         user: str = "", secret: str = "") -> None:
    dialog.name_edit.setText("pacs-web")
    dialog.url_edit.setText(url)
    dialog.ca_edit.setText(str(ca or ""))
    dialog.auth_box.setCurrentIndex(dialog.auth_box.findData(auth))
    dialog.user_edit.setText(user)
    dialog.secret_edit.setText(secret)


def panel(qtbot: QtBot, env: VaultEnv, name: str) -> PacsPanel:
    shown = PacsPanel(env.vault, lambda: env.login(name))
    qtbot.addWidget(shown)
    shown.show()
    qtbot.waitExposed(shown)
    return shown


def test_an_administrator_adds_a_dicomweb_node_and_sees_its_echo(qtbot: QtBot, env: VaultEnv,
                                                                  pacs: DicomWebPacs) -> None:
    assert not panel(qtbot, env, "rad").add_node_button.isVisible()  # a role that may not manage nodes
    admin_panel = panel(qtbot, env, "admin")
    assert admin_panel.add_node_button.isVisible()
    seen: list[DicomWebNodeDialog] = []

    def add(dialog: DicomWebNodeDialog) -> None:
        seen.append(dialog)
        fill(dialog, "http://localhost/dicom-web", auth="bearer", secret="a token")
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
        assert "only sent over HTTPS" in dialog.error_label.text() and dialog.added is None
        fill(dialog, pacs.url("basic"), ca=pacs.site.ca.cert, auth="basic", user=USER, secret="not it")
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
        assert dialog.error_label.text().startswith(f"PACS node 'pacs-web' set: DICOMweb at {pacs.url()}, "
                                                    f"with HTTP basic as {USER}. The echo failed:")
        assert dialog.added is None and dialog.secret_edit.text() == ""
        dialog.secret_edit.setText(PASSWORD)
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)  # added again: replaced
        assert dialog.added is not None and not dialog.error_label.isVisible()
        assert "PACS node 'pacs-web' answered in" in dialog.result_label.text()
        ink = image_array(dialog.result_label.grab().toImage()).max(axis=2) > 110
        assert ink.any(axis=0).sum() > 100  # the answer is drawn, not only set
        assert dialog.ok_button.text() == "Done" and not dialog.url_edit.isEnabled()
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)

    answer(DicomWebNodeDialog, add)
    admin_panel.add_dicomweb_node()
    assert seen[0].result() == QDialog.DialogCode.Accepted
    kept = env.vault.nodes.list(env.login("admin"))
    assert [(n.name, n.url, n.auth, n.user, n.secret) for n in kept] == [
        ("pacs-web", pacs.url(), "basic", USER, PASSWORD)]
    assert kept[0].web_ca == pacs.site.ca.cert.read_text()
    assert admin_panel.node_label.text().startswith("PACS: pacs-web (DICOMweb at")
    assert admin_panel.search_button.isEnabled()
