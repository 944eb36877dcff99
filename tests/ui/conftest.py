"""Fixtures for the viewer tests: one real passphrase-mode vault with a CT study, rendered offscreen.

The vault is built once per test session (password hashing is deliberately slow) and every user
logs in only once, because TOTP refuses a code that was already used: a test that needs a second
code of the same user takes the next time step's (:meth:`Reader.next_code`).
"""

from __future__ import annotations

import itertools
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtCore import QTimer
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QApplication,
    QDialog,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QStatusBar,
    QWidget,
)
from pytestqt.qtbot import QtBot

from app.demo.studies import Patient, ct_study, to_bytes
from app.security import totp
from app.security.accounts import Enrolment
from app.security.roles import Role
from app.security.sessions import Session
from app.store.records import ImportReport
from app.ui.main_window import MainWindow
from app.ui.theme import apply_dark_theme
from app.vault import Vault

ADMIN_PASSWORD = "correct horse battery staple"
USER_PASSWORD = "reading room pass phrase 1"
PATIENT = Patient("P1", "Doe^Jane")
_READERS = itertools.count(1)
Importer = Callable[[list[tuple[str, bytes]]], ImportReport]
D = TypeVar("D", bound=QDialog)


def logged_in(vault: Vault, admin_session: Session, name: str, role: Role) -> Session:
    """A new account of ``role`` (password USER_PASSWORD), logged in."""
    account = vault.admin.add_user(admin_session, name, role, USER_PASSWORD)
    return vault.accounts.login(name, USER_PASSWORD, totp.current_code(account.totp_secret))[1]


@pytest.fixture(scope="session", autouse=True)
def dark_theme(qapp: QApplication) -> None:
    """The palette and style sheet the workstation runs with, so pixels are checked as shown."""
    apply_dark_theme(qapp)


@pytest.fixture(scope="session")
def created_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vault, Enrolment]]:
    """A new vault in passphrase mode (no keyring) and its admin's enrolment."""
    home: Path = tmp_path_factory.mktemp("custodian") / "home"
    vault, enrolment = Vault.create(home, admin="admin", password=ADMIN_PASSWORD,
                                    passphrase="ui test passphrase", use_keyring=False)
    yield vault, enrolment
    vault.close()


@pytest.fixture(scope="session")
def vault(created_vault: tuple[Vault, Enrolment]) -> Vault:
    return created_vault[0]


@pytest.fixture(scope="session")
def admin_session(created_vault: tuple[Vault, Enrolment]) -> Session:
    vault, enrolment = created_vault
    _, session = vault.accounts.login("admin", ADMIN_PASSWORD, totp.current_code(enrolment.totp_secret))
    return session


@pytest.fixture(scope="session")
def radiologist(vault: Vault, admin_session: Session) -> Enrolment:
    return vault.admin.add_user(admin_session, "rad", Role.RADIOLOGIST, USER_PASSWORD)


@pytest.fixture(scope="session")
def session(vault: Vault, radiologist: Enrolment) -> Session:
    """The radiologist, logged in (the admin role may not see PHI)."""
    _, session = vault.accounts.login("rad", USER_PASSWORD, totp.current_code(radiologist.totp_secret))
    return session


@pytest.fixture(scope="session")
def importer(vault: Vault, admin_session: Session) -> Importer:
    """Imports as a technologist: radiologists read, technologists load studies."""
    tech = vault.admin.add_user(admin_session, "tech", Role.TECHNOLOGIST, USER_PASSWORD)
    _, tech_session = vault.accounts.login("tech", USER_PASSWORD, totp.current_code(tech.totp_secret))
    return lambda items: vault.intake.import_bytes(tech_session, items)


@pytest.fixture(scope="session")
def ct_datasets(importer: Importer) -> list[Dataset]:
    """A 10-slice 64×64 CT (stored int16, intercept -1024, window 40/400), imported."""
    datasets = ct_study(PATIENT, slices=10, size=64)
    report = importer([(f"ct{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
    assert report.imported == len(datasets) and not report.rejected
    return datasets


@pytest.fixture
def new_user(vault: Vault, admin_session: Session) -> Callable[[], Enrolment]:
    """Makes new radiologists (password USER_PASSWORD), each with codes nobody has used yet."""
    return lambda: vault.admin.add_user(admin_session, f"reader{next(_READERS)}", Role.RADIOLOGIST,
                                        USER_PASSWORD)


@pytest.fixture
def fresh_user(new_user: Callable[[], Enrolment]) -> tuple[str, str, str]:
    """A new radiologist (name, password, TOTP secret) whose codes nobody has used yet."""
    enrolment = new_user()
    return enrolment.user.name, USER_PASSWORD, enrolment.totp_secret


@pytest.fixture
def lockout_after_three(vault: Vault, admin_session: Session) -> Iterator[int]:
    """The fewest wrong codes the site may lock an account after, for this test only (every wrong
    step-up code is answered more slowly than the one before)."""
    before = vault.policy.lockout_failures
    vault.admin.set_policy(admin_session, "lockout_failures", "3")
    yield 3
    vault.admin.set_policy(admin_session, "lockout_failures", str(before))


@dataclass(frozen=True)
class Reader:
    """A radiologist logged in with the current code."""

    name: str
    password: str
    secret: str
    session: Session

    def next_code(self) -> str:
        """A code the vault still accepts: the login spent the current time step's."""
        return totp.current_code(self.secret, time.time() + totp.STEP)


@pytest.fixture
def reader(vault: Vault, fresh_user: tuple[str, str, str]) -> Reader:
    name, password, secret = fresh_user
    _, session = vault.accounts.login(name, password, totp.current_code(secret))
    return Reader(name, password, secret, session)


def unused_code(secret: str) -> str:
    """A well-formed code that matches none of the steps the vault accepts (now, ±30 s)."""
    now = time.time()
    valid = {totp.current_code(secret, now + drift) for drift in (-totp.STEP, 0, totp.STEP)}
    return next(code for code in (f"{n:06d}" for n in itertools.count(123456, 7919)) if code not in valid)


@pytest.fixture
def open_window(qtbot: QtBot, vault: Vault) -> Callable[..., MainWindow]:
    """A shown main window of ``session`` with its study list loaded."""
    def open_(session: Session, **options: object) -> MainWindow:
        window = MainWindow(vault, session, **options)  # type: ignore[arg-type]
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        window.refresh()
        return window

    return open_


def answer(kind: type[D], act: Callable[[D], None], timeout: float = 10.0) -> None:
    """Run ``act`` on the next modal dialog of type ``kind`` once its exec() is under way.

    ``act`` must close the dialog; if it fails or leaves the dialog open, the dialog is rejected
    and the test fails instead of waiting forever.
    """
    deadline = time.monotonic() + timeout

    def poll() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, kind) and dialog.isVisible():
            try:
                act(dialog)
                if dialog.isVisible():
                    refusal = getattr(dialog, "error_label", None)
                    raise AssertionError(f"{kind.__name__} was left open: "
                                         f"{refusal.text() if isinstance(refusal, QLabel) else ''}")
            except BaseException:
                dialog.reject()
                raise
        elif time.monotonic() < deadline:
            QTimer.singleShot(10, poll)

    QTimer.singleShot(0, poll)


def shown_texts(window: QWidget) -> list[str]:
    """Every text the window and its children show or hold for display: labels, fields, buttons,
    titles, tooltips, menus, the status bar and every cell of every table."""
    texts: list[str] = []
    for widget in [window, *window.findChildren(QWidget)]:
        texts += [widget.windowTitle(), widget.toolTip(), widget.accessibleName()]
        if isinstance(widget, QLabel | QLineEdit | QAbstractButton):
            texts.append(widget.text())
        if isinstance(widget, QLineEdit):
            texts.append(widget.placeholderText())
        if isinstance(widget, QStatusBar):
            texts.append(widget.currentMessage())
        if isinstance(widget, QMenu):
            texts += [widget.title(), *(action.text() for action in widget.actions())]
        if isinstance(widget, QAbstractItemView) and widget.model() is not None:
            model = widget.model()
            columns = 1 if isinstance(widget, QListView) else model.columnCount()
            texts += [str(model.index(row, column).data(role))
                      for row in range(model.rowCount()) for column in range(columns)
                      for role in (0, 3)]  # display and tooltip
    return texts


def white_pixels(pixels: np.ndarray) -> int:
    """How many pure white pixels: the bone of the CT phantom at its stored window, never the UI."""
    return int((pixels == 255).all(axis=2).sum())


def image_array(image: QImage) -> np.ndarray:
    """A QImage as a (rows, columns, 3) uint8 RGB array (a copy)."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    rows, cols = image.height(), image.width()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    return data.reshape(rows, image.bytesPerLine())[:, : cols * 3].reshape(rows, cols, 3).copy()


@pytest.fixture
def grab_pixels() -> Callable[[QWidget], np.ndarray]:
    """What a widget paints, as an RGB array."""
    return lambda widget: image_array(widget.grab().toImage())


@pytest.fixture
def read_png() -> Callable[[Path], np.ndarray]:
    def read(path: Path) -> np.ndarray:
        image = QImage(str(path))
        assert not image.isNull(), f"{path} is not a readable image"
        return image_array(image)

    return read
