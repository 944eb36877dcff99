"""Envelope keys: keyring mode, passphrase fallback, rotation bookkeeping; never a plaintext key."""

from __future__ import annotations

import json
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.errors import BusyError, CustodianError, NotPermitted, VaultLocked
from app.security.keys import KEYRING_SERVICE, KeyStore, keyring_usable
from app.vault import Vault
from tests.conftest import ADMIN_PASSWORD, PASSPHRASE, VaultEnv, study_bytes


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


# ---------------------------------------------------------------------- renewing the index key
def _opens(home: Path, index_key: bytes) -> bool:
    """Whether the index opens with ``index_key`` read outside the program (sqlcipher3 alone)."""
    import sqlcipher3

    conn = sqlcipher3.connect(str(home / "index.db"))
    try:
        conn.execute(f"PRAGMA key = \"x'{index_key.hex()}'\"")
        for name, value in KeyStore.load(home).index_cipher.items():
            conn.execute(f"PRAGMA {name} = {value}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return True
    except sqlcipher3.DatabaseError:
        return False
    finally:
        conn.close()


def test_rotation_renews_the_index_key_and_the_old_one_opens_nothing(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    old = env.vault._core.keys.index_key
    assert _opens(env.home, old)
    env.vault.admin.rotate_keys(env.login("admin"), PASSPHRASE)
    new = env.vault._core.keys.index_key
    assert new != old and _opens(env.home, new) and not _opens(env.home, old)
    assert len(env.vault.reading.studies(env.login("rad"))) == 1  # the open vault goes on
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    assert env.vault.admin.verify(env.login("admin", fresh=True)).ok == 2
    [rotation] = env.vault._gate._audit.records(AuditQuery(event_type=EventType.KEY_ROTATION))
    assert rotation.detail["index_key"] == "renewed"


def test_an_interrupted_index_key_renewal_opens_with_the_key_it_reached(env: VaultEnv) -> None:
    """Killed after the new key was staged: before the index was re-encrypted the old key stays;
    after, the staged one is found and settled. Either way nothing is lost."""
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    core = env.vault._core
    staged = b"\x01" * 32
    core.keystore.stage_index_key(core.keys, staged)  # ...and the process dies here
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    assert not KeyStore.load(env.home).pending_index and _opens(env.home, env.vault._core.keys.index_key)

    core = env.vault._core
    core.keystore.stage_index_key(core.keys, staged)
    with core.lock:  # the index re-encrypted, the key store not yet settled: then the process dies
        core.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        core.conn.execute("PRAGMA journal_mode = DELETE")
        core.conn.execute(f"PRAGMA rekey = \"x'{staged.hex()}'\"")
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    assert env.vault._core.keys.index_key == staged and not KeyStore.load(env.home).pending_index
    assert env.vault.admin.verify(env.login("admin", fresh=True)).ok == 2


def test_keys_are_not_rotated_while_another_program_has_the_vault_open(env: VaultEnv) -> None:
    other = Vault.open(env.home, lambda: PASSPHRASE)  # the workstation, say
    try:
        with pytest.raises(BusyError, match="open in another program"):
            env.vault.admin.rotate_keys(env.login("admin"), PASSPHRASE)
    finally:
        other.close()
    assert env.vault.admin.rotate_keys(env.login("admin"), PASSPHRASE) >= 1


def test_the_passphrase_changes_and_the_old_one_no_longer_opens(env: VaultEnv) -> None:
    env.vault.admin.change_passphrase(env.login("admin"), "a new vault passphrase")
    env.vault.close()
    with pytest.raises(VaultLocked, match="passphrase is wrong"):
        Vault.open(env.home, lambda: PASSPHRASE)
    env.vault = Vault.open(env.home, lambda: "a new vault passphrase")
    [change] = env.vault._gate._audit.records(AuditQuery(event_type=EventType.KEY_ROTATION))
    assert change.user == "admin" and change.detail == {"passphrase": "changed"}
    with pytest.raises(NotPermitted):
        env.vault.admin.change_passphrase(env.login("rad"), "the radiologist's choice")


def test_a_keyring_vault_has_no_passphrase_to_change(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    from app.security import totp

    vault, enrolment = Vault.create(tmp_path / "home", admin="admin", password=ADMIN_PASSWORD,
                                    passphrase=None)
    _, admin = vault.accounts.login("admin", ADMIN_PASSWORD, totp.current_code(enrolment.totp_secret))
    with pytest.raises(CustodianError, match="kept by the OS keyring"):
        vault.admin.change_passphrase(admin, "any passphrase at all")
    vault.close()
