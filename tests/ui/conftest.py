"""Fixtures for the viewer tests: one real passphrase-mode vault with a CT study, rendered offscreen.

The vault is built once per test session (password hashing is deliberately slow) and every user
logs in only once, because TOTP refuses a code that was already used.
"""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QWidget

from app.demo.studies import Patient, ct_study, to_bytes
from app.security import totp
from app.security.accounts import Enrolment
from app.security.roles import Role
from app.security.sessions import Session
from app.store.records import ImportReport
from app.store.vault import Vault

ADMIN_PASSWORD = "correct horse battery staple"
USER_PASSWORD = "reading room pass phrase 1"
PATIENT = Patient("P1", "Doe^Jane")
_READERS = itertools.count(1)
Importer = Callable[[list[tuple[str, bytes]]], ImportReport]


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
    _, session = vault.login("admin", ADMIN_PASSWORD, totp.current_code(enrolment.totp_secret))
    return session


@pytest.fixture(scope="session")
def radiologist(vault: Vault, admin_session: Session) -> Enrolment:
    return vault.add_user(admin_session, "rad", Role.RADIOLOGIST, USER_PASSWORD)


@pytest.fixture(scope="session")
def session(vault: Vault, radiologist: Enrolment) -> Session:
    """The radiologist, logged in (the admin role may not see PHI)."""
    _, session = vault.login("rad", USER_PASSWORD, totp.current_code(radiologist.totp_secret))
    return session


@pytest.fixture(scope="session")
def importer(vault: Vault, admin_session: Session) -> Importer:
    """Imports as a technologist: radiologists read, technologists load studies."""
    tech = vault.add_user(admin_session, "tech", Role.TECHNOLOGIST, USER_PASSWORD)
    _, tech_session = vault.login("tech", USER_PASSWORD, totp.current_code(tech.totp_secret))
    return lambda items: vault.import_bytes(tech_session, items)


@pytest.fixture(scope="session")
def ct_datasets(importer: Importer) -> list[Dataset]:
    """A 10-slice 64×64 CT (stored int16, intercept -1024, window 40/400), imported."""
    datasets = ct_study(PATIENT, slices=10, size=64)
    report = importer([(f"ct{i}", to_bytes(ds)) for i, ds in enumerate(datasets)])
    assert report.imported == len(datasets) and not report.rejected
    return datasets


@pytest.fixture
def fresh_user(vault: Vault, admin_session: Session) -> tuple[str, str, str]:
    """A new radiologist (name, password, TOTP secret) whose codes nobody has used yet."""
    name = f"reader{next(_READERS)}"
    enrolment = vault.add_user(admin_session, name, Role.RADIOLOGIST, USER_PASSWORD)
    return name, USER_PASSWORD, enrolment.totp_secret


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
