"""An offline login (the directory down, tests/peers/slapd.py) is marked in the status bar until
the directory answers again."""

from __future__ import annotations

import time
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.ui.main_window import MainWindow
from tests.conftest import make_env
from tests.peers.ports import free_port
from tests.peers.slapd import SERVICE_PASSWORD
from tests.security.test_directory import PASSWORDS, config, enrol, slapd  # noqa: F401  (the peer fixture)


def test_an_offline_login_is_marked_until_the_directory_answers(qtbot: QtBot, tmp_path: Path,
                                                                 slapd) -> None:  # noqa: F811
    server, site = slapd
    env = make_env(tmp_path / "home")
    admin = env.login("admin")
    env.vault.admin.set_policy(admin, "directory_recheck_seconds", "1")
    env.vault.admin.set_directory(admin, config(server, site), SERVICE_PASSWORD)
    codes = enrol(env.vault, "alice")[1]
    env.vault.admin.set_directory(admin, config(server, site, url=f"ldaps://localhost:{free_port()}"),
                                  SERVICE_PASSWORD)
    session = env.vault.accounts.login("alice", PASSWORDS["alice"], codes.next())[1]
    window = MainWindow(env.vault, session)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    notice = window.keeper.offline_notice
    assert notice.isVisible() and "Offline" in notice.text()
    env.vault.admin.set_directory(admin, config(server, site), SERVICE_PASSWORD)
    time.sleep(1.1)
    window.keeper.idle_watch.active.emit()  # the reader at work: the session is asked about again
    assert not notice.isVisible()
    window.close()
    env.vault.close()
