"""Service vaults: the master key sealed in a real PKCS#11 token (SoftHSM2, made here) or in a key
file only this account reads; boot without a person, plain refusals, moving the key, and the
audit checkpoint key inside the token."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pkcs11 import Attribute, ObjectClass

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.errors import IntegrityError, NotPermitted, UsageError, VaultLocked
from app.security.keys import KeyStore
from app.security.roles import Role
from app.security.sealing import (
    KEK_FILE,
    PIN_ENV,
    PIN_FILE,
    KeyFileSealer,
    Sealer,
    TokenSigningKey,
    write_private,
)
from app.store.books import RetiredKeys
from app.store.core import AUDIT_SIGNING_CONTEXT, TOKEN_SIGNER_KEY
from app.vault import Vault
from tests.conftest import ADMIN_PASSWORD, REPO, Account, Cli, Codes, VaultEnv, make_cli_users, study_bytes
from tests.peers.softhsm import MODULE, PIN, SoftToken, softhsm_conf

STAFF = (("tech", Role.TECHNOLOGIST), ("rad", Role.RADIOLOGIST))


def _token_session(token: SoftToken) -> Any:
    """A session on the test's token, opened outside the program (as someone with the PIN)."""
    lib = pkcs11.lib(MODULE)
    slots = [s for s in lib.get_slots(token_present=True) if s.slot_id == token.slot]
    if not slots:  # the library was started with another test's token directory
        lib.reinitialize()
        slots = [s for s in lib.get_slots(token_present=True) if s.slot_id == token.slot]
    return slots[0].get_token().open(rw=True, user_pin=PIN)


def sealed_env(home: Path, sealer: Sealer, *roles: tuple[str, Role]) -> VaultEnv:
    vault, enrolment = Vault.create(home, admin="admin", password=ADMIN_PASSWORD, passphrase=None,
                                    sealer=sealer)
    env = VaultEnv(home, vault)
    env.accounts["admin"] = Account("admin", Role.ADMIN, ADMIN_PASSWORD, Codes(enrolment.totp_secret))
    for name, role in roles:
        env.add(name, role)
    return env


def no_person() -> str | None:
    raise AssertionError("a service vault asked for a passphrase")


def reopen(env: VaultEnv) -> None:
    """Close the vault and open it again as the service does at boot: nobody present."""
    env.vault.close()
    env.vault = Vault.open(env.home, no_person)


@pytest.fixture
def token_env(tmp_path: Path, token: SoftToken) -> Iterator[VaultEnv]:
    env = sealed_env(tmp_path / "home", token.sealer(), *STAFF)
    yield env
    env.vault.close()


@pytest.fixture
def keyfile_env(tmp_path: Path) -> Iterator[VaultEnv]:
    env = sealed_env(tmp_path / "home", KeyFileSealer(), *STAFF)
    yield env
    env.vault.close()


def _secrets(env: VaultEnv) -> list[bytes]:
    """Every key the open vault holds: master keys, the index key, each data key."""
    core = env.vault._core
    rows = core.query("SELECT context, kid, wrapped FROM data_keys")
    return [*core.keys.masters.values(), core.keys.index_key,
            *(core.keys.unwrap_data_key(kid, wrapped, context) for context, kid, wrapped in rows)]


def _files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------- the token
def test_a_token_vault_boots_without_a_person(token_env: VaultEnv, token: SoftToken) -> None:
    env = token_env
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    assert env.vault.key_mode == "pkcs11"
    reopen(env)  # no passphrase, no PIN in the environment: the PIN file the key was made with
    assert env.vault.key_mode == "pkcs11"
    assert len(env.vault.reading.studies(env.login("rad"))) == 1
    assert env.vault.admin.verify(env.login("admin")).ok == 2
    store = json.loads((env.home / "keystore.json").read_text())
    assert store["mode"] == "pkcs11" and store["kdf"] is None
    assert store["sealer"]["module"] == MODULE and store["sealer"]["slot"] == token.slot
    assert PIN not in (env.home / "keystore.json").read_text()
    pin_file = env.home / PIN_FILE
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o400 and pin_file.read_text() == PIN


@pytest.mark.parametrize("sealed", ["token_env", "keyfile_env"])
def test_no_key_is_in_any_file_in_plaintext(sealed: str, request: pytest.FixtureRequest,
                                            token: SoftToken) -> None:
    env: VaultEnv = request.getfixturevalue(sealed)
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    keys = _secrets(env)
    assert len(keys) >= 3  # a master, the index key, the study's data key
    for path in _files(env.home, token.tokens):  # (the token's own files too: the master is not there)
        content = path.read_bytes()
        for key in keys:
            for form in (key, base64.b64encode(key), key.hex().encode()):
                assert form not in content, f"a key in plaintext in {path.name}"
    sealed = json.loads((env.home / "keystore.json").read_text())["masters"]
    assert len(sealed) == 1 and all(len(base64.b64decode(v)) == 12 + 32 + 16 for v in sealed.values())


def test_a_wrong_pin_leaves_the_vault_locked_with_a_plain_sentence(
    token_env: VaultEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_env.vault.close()
    monkeypatch.setenv(PIN_ENV, "9999-not-it")
    with pytest.raises(VaultLocked, match=r"refused the PIN") as refused:
        Vault.open(token_env.home, no_person)
    message = str(refused.value)
    assert "9999" not in message and PIN not in message and "\n" not in message
    with pytest.raises(VaultLocked, match=r"refused the PIN"):  # (not offered to the token again)
        Vault.open(token_env.home, no_person)
    monkeypatch.delenv(PIN_ENV)
    write_private(token_env.home / PIN_FILE, b"1111-also-wrong")  # a wrong PIN file, likewise
    with pytest.raises(VaultLocked, match=r"refused the PIN"):
        Vault.open(token_env.home, no_person)
    monkeypatch.setenv(PIN_ENV, PIN)  # the environment's PIN comes before the file's
    token_env.vault = Vault.open(token_env.home, no_person)


def test_a_removed_token_leaves_the_vault_locked(token_env: VaultEnv, token: SoftToken, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    token_env.vault.close()
    elsewhere = softhsm_conf(tmp_path / "other.conf", tmp_path / "no-tokens")
    monkeypatch.setenv("SOFTHSM2_CONF", str(elsewhere))  # the token is not in this machine
    with pytest.raises(VaultLocked, match=rf"token \(slot {token.slot}\) is not present"):
        Vault.open(token_env.home, no_person)
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))  # back: the service unlocks again
    token_env.vault = Vault.open(token_env.home, no_person)
    token_env.vault.close()
    shutil.rmtree(token.tokens)  # and now gone for good
    token.tokens.mkdir()
    with pytest.raises(VaultLocked, match=r"is not present"):
        Vault.open(token_env.home, no_person)
    # The command line says it in one sentence, no traceback, exit 3 (not permitted).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
    done = subprocess.run([sys.executable, "-m", "app", "--home", str(token_env.home), "studies"], cwd=REPO,
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 3
    assert "is not present" in done.stderr and "Traceback" not in done.stderr


def test_a_token_vaults_backup_restores_on_a_machine_without_its_token(
        token_env: VaultEnv, token: SoftToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint key never leaves the token, so the restored copy makes its own and keeps the
    old key's public half: the trail it brings still verifies, later checkpoints use the new key."""
    env = token_env
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    assert env.vault.trail.verify(env.login("admin")).ok  # a checkpoint signed in the token
    old_key = env.vault._gate._audit.signing_key.public_key().public_bytes_raw()
    passphrase = "a backup passphrase long enough"
    env.vault.admin.backup(env.login("admin"), tmp_path / "site.backup", passphrase)
    env.vault.close()
    elsewhere = softhsm_conf(tmp_path / "other.conf", tmp_path / "no-tokens")
    monkeypatch.setenv("SOFTHSM2_CONF", str(elsewhere))  # another machine: the token is not there
    restored = Vault.restore(tmp_path / "site.backup", tmp_path / "restored", passphrase,
                             vault_passphrase=None, sealer=KeyFileSealer(tmp_path / "restored"))
    try:
        env.vault, env.home = restored, tmp_path / "restored"
        assert restored.key_mode == "keyfile"
        audit = restored._gate._audit
        assert not isinstance(audit.signing_key, TokenSigningKey)
        assert [raw for raw, _ in RetiredKeys(restored._core.conn).all()] == [old_key]
        assert restored.trail.verify(env.login("admin", fresh=True)).ok  # old and new checkpoints
        events = audit.records(AuditQuery(event_type=EventType.RESTORE))
        assert events[0].detail["checkpoint_key"] == "renewed"
        assert len(restored.reading.studies(env.login("rad", fresh=True))) == 1
    finally:
        restored.close()
        env.vault = Vault.open(env.home, no_person)  # (for the fixture's close)


def test_a_token_without_the_vaults_key_says_so(token_env: VaultEnv, token: SoftToken) -> None:
    token_env.vault.close()
    vault_id = KeyStore.load(token_env.home).vault_id
    with _token_session(token) as session:
        for obj in list(session.get_objects({Attribute.LABEL: f"custodian-master-{vault_id}"})):
            obj.destroy()
    with pytest.raises(VaultLocked, match=r"holds no key for this vault"):
        Vault.open(token_env.home, no_person)


def test_the_checkpoint_key_is_made_in_the_token_and_never_leaves_it(
    token_env: VaultEnv, token: SoftToken
) -> None:
    env = token_env
    signer = env.vault._gate._audit.signing_key
    assert isinstance(signer, TokenSigningKey)
    core = env.vault._core
    assert core.query("SELECT 1 FROM data_keys WHERE context = ?", (AUDIT_SIGNING_CONTEXT,)) == []
    vault_id = core.keys.vault_id
    with _token_session(token) as session:
        [private] = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                               Attribute.LABEL: f"custodian-audit-{vault_id}"}))
        [kek] = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                           Attribute.LABEL: f"custodian-master-{vault_id}"}))
        for key in (private, kek):
            assert key[Attribute.EXTRACTABLE] is False and key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.SENSITIVE] is True and key[Attribute.TOKEN] is True
            with pytest.raises(pkcs11.AttributeSensitive):
                key[Attribute.VALUE]
        signature = bytes(private.sign(b"outside", mechanism=pkcs11.Mechanism.EDDSA))
    signer.public_key().verify(signature, b"outside")  # the pair the trail uses is that one
    signer.public_key().verify(signer.sign(b"checkpoint"), b"checkpoint")
    report = env.vault.trail.verify(env.login("admin"))  # and signs the head now
    assert report.ok
    reopen(env)
    assert env.vault.trail.verify(env.login("admin", fresh=True)).checkpoints >= 1
    # A head signed by any key outside the token (someone holding every file and key) fails.
    forged = Ed25519PrivateKey.generate()
    with env.vault._core.transaction() as conn:
        seq, head, at = conn.execute("SELECT seq, head_hash, at FROM audit_checkpoints").fetchone()
        payload = f"custodian-audit-checkpoint\n{seq}\n{head}\n{at}".encode()
        conn.execute("UPDATE audit_checkpoints SET signature = ? WHERE seq = ?", (forged.sign(payload), seq))
    assert not env.vault.trail.verify(env.login("admin")).ok


def test_key_rotation_in_token_mode(token_env: VaultEnv) -> None:
    env = token_env
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    before = KeyStore.load(env.home)
    assert env.vault.admin.rotate_keys(env.login("admin")) == 1  # the study's data key
    after = KeyStore.load(env.home)
    assert after.mode == "pkcs11" and after.current_kid != before.current_kid
    assert list(after.masters) == [after.current_kid] and after.masters != before.masters
    reopen(env)
    assert env.vault.admin.verify(env.login("admin", fresh=True)).ok == 2
    assert env.vault.trail.verify(env.login("admin")).ok


# ---------------------------------------------------------------------------- the key file
def test_key_file_mode(keyfile_env: VaultEnv) -> None:
    env = keyfile_env
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    kek = env.home / KEK_FILE
    info = kek.stat()
    assert stat.S_IMODE(info.st_mode) == 0o400 and info.st_uid == os.geteuid() and info.st_size == 32
    assert env.vault.key_mode == "keyfile"
    assert json.loads((env.home / "keystore.json").read_text())["sealer"] == {"mode": "keyfile",
                                                                              "file": KEK_FILE}
    reopen(env)
    assert len(env.vault.reading.studies(env.login("rad"))) == 1
    env.vault.close()
    kek.chmod(0o644)  # widened by someone: refused until it is the service account's alone again
    with pytest.raises(VaultLocked, match=r"may be read by other accounts \(mode 0644\)"):
        Vault.open(env.home, no_person)
    kek.chmod(0o400)
    saved = kek.read_bytes()
    kek.unlink()
    with pytest.raises(VaultLocked, match=r"key file .*master\.kek is missing"):
        Vault.open(env.home, no_person)
    write_private(kek, os.urandom(32))  # another key altogether
    with pytest.raises(VaultLocked, match=r"does not open this vault's master key"):
        Vault.open(env.home, no_person)
    write_private(kek, saved)
    env.vault = Vault.open(env.home, no_person)
    with pytest.raises(UsageError, match="already sealed with a key file"):
        env.vault.admin.move_master_key(env.login("admin"), None)


def test_restored_master_keys_are_adopted_into_the_token(keyfile_env: VaultEnv, token: SoftToken,
                                                        tmp_path: Path) -> None:
    """What a restore does with a backup's master keys (``KeyStore.adopt``), sealing them in a
    token: the copy opens there without a person."""
    env = keyfile_env
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    masters = dict(env.vault._core.keys.masters)
    env.vault.close()
    copy = tmp_path / "restored"
    copy.mkdir(mode=0o700)
    for name in ("keystore.json", "index.db", "blobs"):
        (shutil.copytree if (env.home / name).is_dir() else shutil.copy2)(env.home / name, copy / name)
    store = KeyStore.load(copy)
    store.adopt(masters, passphrase=None, use_keyring=False, sealer=token.sealer())
    store.save()
    assert not (copy / KEK_FILE).exists() and (copy / PIN_FILE).exists()
    restored = Vault.open(copy, no_person)
    try:
        assert restored.key_mode == "pkcs11"
        env.vault = restored
        assert len(restored.reading.studies(env.login("rad", fresh=True))) == 1
        assert restored.admin.verify(env.login("admin", fresh=True)).ok == 2
    finally:
        restored.close()


# ---------------------------------------------------------------------------- moving the key
def _moves(env: VaultEnv) -> list[dict[str, object]]:
    records = env.vault._gate._audit.records(AuditQuery(event_type=EventType.KEY_ROTATION))
    return [r.detail for r in reversed(records) if r.detail.get("master_key") == "moved"]


def test_moving_the_key_file_into_the_token_and_back(keyfile_env: VaultEnv, token: SoftToken) -> None:
    env = keyfile_env
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    assert env.vault.trail.verify(env.login("admin")).ok  # a signed checkpoint to carry over
    old_kek = (env.home / KEK_FILE).read_bytes()
    with pytest.raises(NotPermitted):
        env.vault.admin.move_master_key(env.login("rad"), token.sealer())

    moved = env.vault.admin.move_master_key(env.login("admin"), token.sealer())
    assert (moved.source, moved.target, moved.checkpoints) == ("keyfile", "pkcs11", 1)
    assert not (env.home / KEK_FILE).exists() and stat.S_IMODE((env.home / PIN_FILE).stat().st_mode) == 0o400
    assert KeyStore.load(env.home).mode == "pkcs11"
    core = env.vault._core
    assert core.query("SELECT 1 FROM data_keys WHERE context = ?", (AUDIT_SIGNING_CONTEXT,)) == []
    assert core.query("SELECT 1 FROM meta WHERE key = ?", (TOKEN_SIGNER_KEY,)) != []
    assert isinstance(env.vault._gate._audit.signing_key, TokenSigningKey)
    assert env.vault.trail.verify(env.login("admin")).ok
    reopen(env)
    assert len(env.vault.reading.studies(env.login("rad", fresh=True))) == 1
    assert env.vault.admin.verify(env.login("admin", fresh=True)).ok == 2
    assert env.vault.trail.verify(env.login("admin")).ok
    # The old key file opens nothing now: the key store's masters are sealed in the token.
    store = KeyStore.load(env.home)
    store.mode, store.sealer = "keyfile", {"mode": "keyfile"}
    write_private(env.home / KEK_FILE, old_kek)
    with pytest.raises(VaultLocked):
        store.unlock(no_person)
    (env.home / KEK_FILE).unlink()

    back = env.vault.admin.move_master_key(env.login("admin"), None)
    assert (back.source, back.target) == ("pkcs11", "keyfile") and back.checkpoint_key != moved.checkpoint_key
    assert stat.S_IMODE((env.home / KEK_FILE).stat().st_mode) == 0o400 and not (env.home / PIN_FILE).exists()
    with _token_session(token) as session:  # the token keeps nothing of this vault
        assert [o for o in session.get_objects() if core.keys.vault_id in str(o[Attribute.LABEL])] == []
    reopen(env)
    assert env.vault.key_mode == "keyfile"
    assert len(env.vault.reading.studies(env.login("rad", fresh=True))) == 1
    assert env.vault.trail.verify(env.login("admin", fresh=True)).ok
    assert [(m["from"], m["to"]) for m in _moves(env)] == [("keyfile", "pkcs11"), ("pkcs11", "keyfile")]
    [first, second] = _moves(env)
    assert first["checkpoint_key"] == second["previous_checkpoint_key"] == moved.checkpoint_key


def test_a_trail_that_does_not_verify_is_not_signed_again(keyfile_env: VaultEnv, token: SoftToken) -> None:
    env = keyfile_env
    assert env.vault.trail.verify(env.login("admin")).ok
    signer = env.vault._gate._audit.signing_key
    with env.vault._core.transaction() as conn:  # someone with every key rewrites a record
        for trigger in ("audit_append_only_update", "audit_append_only_delete"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("UPDATE audit SET record = replace(record, 'admin', 'nobody') WHERE seq = 2")
    with pytest.raises(IntegrityError, match=r"does not verify \(first bad record 2\)"):
        env.vault.admin.move_master_key(env.login("admin"), token.sealer())
    assert KeyStore.load(env.home).mode == "keyfile" and (env.home / KEK_FILE).exists()
    assert env.vault._gate._audit.signing_key is signer


def test_key_move_on_the_command_line(token: SoftToken, cli: Cli) -> None:
    """From an embedded (passphrase) vault into the token, and on to a key file: afterwards no
    passphrase is needed, and people log in and work as before."""
    assert cli.env["SOFTHSM2_CONF"] == str(token.conf)
    users = make_cli_users(cli)
    moved = cli.json("key", "move", "--pkcs11", MODULE, "--slot", str(token.slot), extra_env={PIN_ENV: PIN})
    assert moved["key_storage"] == "pkcs11" and moved["moved_from"] == "passphrase"
    del cli.env["CUSTODIAN_PASSPHRASE"]
    assert cli.json("audit", "verify")["ok"] is True
    assert users.login("rad").returncode == 0
    assert cli.json("studies") == []
    assert users.login("admin").returncode == 0
    refused = cli("key", "move", "--pkcs11", MODULE, extra_env={PIN_ENV: PIN})
    assert refused.returncode == 2 and "--slot N or --token LABEL" in refused.stderr
    back = cli.json("key", "move", "--key-file")
    assert (back["key_storage"], back["moved_from"]) == ("keyfile", "pkcs11")
    assert cli.json("audit", "verify")["ok"] is True
    assert stat.S_IMODE((cli.home / KEK_FILE).stat().st_mode) == 0o400
    # A backup restored as a service vault, its master key sealed in the token.
    backup = {"CUSTODIAN_BACKUP_PASSPHRASE": "a backup passphrase long enough"}
    assert users.login("admin").returncode == 0
    made = cli.json("backup", str(cli.home.parent / "site.backup"), extra_env=backup)
    restored = Cli(cli.home.parent / "restored", cli.env)
    done = restored.json("restore", made["file"], "--service", "--pkcs11", MODULE, "--slot", str(token.slot),
                         extra_env={**backup, PIN_ENV: PIN})
    assert done["key_storage"] == "pkcs11"
