"""Envelope keys: keyring mode, passphrase fallback, rotation bookkeeping; never a plaintext key."""

from __future__ import annotations

import json
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import pytest

from app.errors import VaultLocked
from app.security.keys import KEYRING_SERVICE, KeyStore, keyring_usable
from app.vault import Vault
from tests.conftest import ADMIN_PASSWORD


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A stand-in for the OS secret store, which this headless machine does not have."""

    priority = 10

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.items[(service, username)]


@pytest.fixture
def memory_keyring() -> MemoryKeyring:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_keyring_mode_keeps_the_master_key_out_of_files(
    memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    assert keyring_usable()
    home = tmp_path / "home"
    vault, _ = Vault.create(home, admin="admin", password=ADMIN_PASSWORD, passphrase=None)
    assert vault.key_mode == "keyring"
    vault.close()
    (service, _name), master_b64 = next(iter(memory_keyring.items.items()))
    assert service == KEYRING_SERVICE
    store = json.loads((home / "keystore.json").read_text())
    assert store["mode"] == "keyring" and store["masters"] == {} and store["kdf"] is None
    for path in home.rglob("*"):
        if path.is_file():
            assert master_b64.encode() not in path.read_bytes()
    Vault.open(home, lambda: None).close()  # no passphrase needed
    memory_keyring.items.clear()
    with pytest.raises(VaultLocked, match="keyring does not hold"):
        Vault.open(home, lambda: None)


def test_fail_backend_means_passphrase_fallback(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        assert not keyring_usable()
        with pytest.raises(VaultLocked, match="passphrase is needed"):
            Vault.create(tmp_path / "h", admin="admin", password=ADMIN_PASSWORD, passphrase=None)
        assert not (tmp_path / "h" / "keystore.json").exists()
        vault, _ = Vault.create(tmp_path / "h", admin="admin", password=ADMIN_PASSWORD, passphrase="pp")
        assert vault.key_mode == "passphrase"
        vault.close()
    finally:
        keyring.set_keyring(previous)


def test_rotation_in_keyring_mode_retires_the_old_entry(
    memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    vault, enrolment = Vault.create(home, admin="admin", password=ADMIN_PASSWORD, passphrase=None)
    from app.security import totp

    _, admin = vault.accounts.login("admin", ADMIN_PASSWORD, totp.current_code(enrolment.totp_secret))
    before = set(memory_keyring.items)
    vault.admin.rotate_keys(admin)
    after = set(memory_keyring.items)
    assert len(after) == 1 and after != before
    vault.close()
    Vault.open(home, lambda: None).close()


def test_interrupted_rotation_still_opens(tmp_path: Path) -> None:
    """A crash between the rotation steps leaves both masters listed; every key stays readable."""
    home = tmp_path / "home"
    vault, _ = Vault.create(home, admin="admin", password=ADMIN_PASSWORD, passphrase="pp",
                            use_keyring=False)
    store = KeyStore.load(home)
    keys = store.unlock(lambda: "pp")
    store.begin_rotation(keys, "pp")  # ...and the process dies here
    vault.close()
    reopened = Vault.open(home, lambda: "pp")
    assert len(KeyStore.load(home).index_keys) == 2
    reopened.close()
