"""The card reader at the screen, with a real SoftHSM2 token as the card: where the site's second
factor is a card, a card in the reader turns the login's code field into the card's PIN prompt, and
pulling it out locks the window, whose lock screen then asks for the card's PIN."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QLineEdit, QWidget
from pytestqt.qtbot import QtBot

from app.security import card as cards
from app.security.directory import DirectoryConfig, parse_mapping
from app.ui.card_reader import CARD_FOUND, CARD_PIN, CARD_REMOVED, field_label
from app.ui.login_dialog import LoginDialog
from app.ui.main_window import MainWindow
from tests.conftest import VaultEnv, make_env
from tests.peers.cards import Card, CardAuthority
from tests.peers.pki import Site
from tests.peers.ports import free_port
from tests.peers.slapd import PLAIN, SERVICE_PASSWORD, group_dn

Grab = Callable[[QWidget], np.ndarray]


@pytest.fixture
def card_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VaultEnv, Card]]:
    """A vault whose directory users' second factor is a card (the directory itself is not asked
    here), and a card in the reader."""
    ca = CardAuthority(tmp_path / "ca", "Hospital Card CA")
    badge = Card.make(tmp_path / "badge")
    badge.put(ca.issue(badge.public, "alice@hospital.example"))
    monkeypatch.setenv("SOFTHSM2_CONF", str(badge.conf))
    monkeypatch.setenv(cards.MODULE_ENV, badge.module)
    env = make_env(tmp_path / "home")
    config = DirectoryConfig(f"ldaps://localhost:{free_port()}", PLAIN, f"cn=custodian,{PLAIN}",
                             parse_mapping([f"radiologist={group_dn('radiologists', PLAIN)}"]),
                             tls_ca=Site(tmp_path, "localhost").ca.cert.read_text(), second_factor="card",
                             card_ca=ca.pem.read_text())
    env.vault.admin.set_directory(env.login("admin"), config, SERVICE_PASSWORD)
    yield env, badge
    env.vault.close()


def row_label(edit: QLineEdit) -> str:
    label = field_label(edit)
    assert label is not None
    return label.text()


def test_a_card_in_the_reader_asks_for_its_pin_and_pulling_it_out_locks(
        qtbot: QtBot, card_site: tuple[VaultEnv, Card], grab_pixels: Grab) -> None:
    env, badge = card_site
    dialog = LoginDialog(env.vault)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.card_reader is not None and dialog.card_reader.present
    assert row_label(dialog.code_edit) == CARD_PIN and dialog.intro_label.text() == CARD_FOUND
    assert dialog.code_edit.echoMode() is QLineEdit.EchoMode.Password  # the PIN is never shown
    dialog.code_edit.setText("123456")
    hidden = grab_pixels(dialog.code_edit)

    window = MainWindow(env.vault, env.login("admin"))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.keeper.card_reader is not None and not window.locked
    before = grab_pixels(window)

    badge.pull_out()
    qtbot.waitUntil(lambda: window.locked and row_label(dialog.code_edit) == "Code", timeout=3000)
    assert window.lock_screen.error_label.text() == CARD_REMOVED
    assert row_label(window.lock_screen.code_edit) == "Code"  # no card: the code of a local account
    assert not np.array_equal(before, grab_pixels(window)), "the lock screen shows, not the work"
    dialog.code_edit.setText("123456")
    assert not np.array_equal(hidden, grab_pixels(dialog.code_edit)), "a code shows as typed, a PIN does not"


def test_a_site_without_cards_polls_no_reader(qtbot: QtBot, tmp_path: Path) -> None:
    env = make_env(tmp_path / "home")
    try:
        dialog = LoginDialog(env.vault)
        qtbot.addWidget(dialog)
        assert dialog.card_reader is None and row_label(dialog.code_edit) == "Code"
    finally:
        env.vault.close()
