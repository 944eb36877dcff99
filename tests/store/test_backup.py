"""Backup and restore (HIPAA 164.308(a)(7)): the whole vault round-trips into a new home on the
keys of that machine, and a wrong passphrase or a changed backup is refused, leaving nothing."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.errors import CustodianError, VaultExists
from app.store.backup import MAGIC, BackupDamaged
from app.vault import Vault
from tests.conftest import PASSPHRASE, CliUsers, VaultEnv, study_bytes, write_study

BACKUP_PASSPHRASE = "correct staple battery horse backup"
NEW_PASSPHRASE = "a different passphrase for the restored vault"


def _backed_up(env: VaultEnv, tmp_path: Path) -> tuple[Path, list[tuple[str, bytes]]]:
    items = study_bytes(Patient("BKP-1", "Backup^Bella"), slices=3, size=16)
    env.vault.intake.import_bytes(env.login("tech"), items)
    out = tmp_path / "vault.backup"
    result = env.vault.admin.backup(env.login("admin"), out, BACKUP_PASSPHRASE)
    assert result.path == out and result.instances == 3 and out.stat().st_size == result.size
    return out, items


def test_round_trip_into_a_new_home(env: VaultEnv, tmp_path: Path) -> None:
    out, items = _backed_up(env, tmp_path)
    data = out.read_bytes()
    for secret in (b"Backup^Bella", b"BKP-1", pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
                   .StudyInstanceUID.encode(), items[0][1][-64:]):
        assert secret not in data, "the backup shows no name, ID, UID or pixel bytes"
    (made,) = env.vault._gate._audit.records(AuditQuery(event_type=EventType.BACKUP))
    assert made.user == "admin" and made.detail["instances"] == 3
    assert made.detail["sha256"] == hashlib.sha256(data).hexdigest()  # the file as written

    home = tmp_path / "restored"
    with Vault.restore(out, home, BACKUP_PASSPHRASE, vault_passphrase=NEW_PASSPHRASE,
                       use_keyring=False) as restored:
        assert not list(home.rglob("masters.json")) and not list(home.glob(".restore-*"))
        env.vault.close()  # the restored vault stands on its own
        rad = restored.accounts.login("rad", env.accounts["rad"].password,
                                      env.accounts["rad"].codes.next())[1]
        (study,) = restored.reading.studies(rad)
        assert study.patient_id == "BKP-1" and study.instances == 3
        admin = restored.accounts.login("admin", env.accounts["admin"].password,
                                        env.accounts["admin"].codes.next())[1]
        report = restored.admin.verify(admin)
        assert report.instances == 3 and not report.damaged
        assert restored.trail.verify(admin).ok
        (back,) = restored._gate._audit.records(AuditQuery(event_type=EventType.RESTORE))
        assert back.detail["instances"] == 3 and back.detail["sha256"] == made.detail["sha256"]
    # On this machine it opens with the new passphrase, not the old one.
    with pytest.raises(CustodianError, match="passphrase is wrong"):
        Vault.open(home, lambda: PASSPHRASE)
    Vault.open(home, lambda: NEW_PASSPHRASE).close()


@pytest.mark.parametrize("damage", ["passphrase", "flipped", "truncated", "appended"])
def test_a_wrong_passphrase_or_changed_backup_restores_nothing(env: VaultEnv, tmp_path: Path,
                                                               damage: str) -> None:
    out, _ = _backed_up(env, tmp_path)
    data = bytearray(out.read_bytes())
    passphrase = BACKUP_PASSPHRASE
    if damage == "passphrase":
        passphrase = "not the backup passphrase at all"
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncated":
        del data[-100:]
    else:
        data += b"more"
    out.write_bytes(bytes(data))
    home = tmp_path / "restored"
    with pytest.raises(BackupDamaged) as refused:
        Vault.restore(out, home, passphrase, vault_passphrase=NEW_PASSPHRASE, use_keyring=False)
    assert refused.value.exit_code == 4
    assert not Vault.exists(home) and not [p for p in home.rglob("*") if p.is_file()]


def test_a_missing_blob_file_is_counted_and_the_rest_backed_up(env: VaultEnv, tmp_path: Path) -> None:
    env.vault.intake.import_bytes(env.login("tech"),
                                  study_bytes(Patient("BKP-3", "Gap^Gina"), slices=3, size=16))
    (blob,) = env.vault._core.query("SELECT blob FROM instances LIMIT 1")[0]
    env.vault._core.blobs.path(blob).unlink()  # lost to a disk fault
    result = env.vault.admin.backup(env.login("admin"), tmp_path / "gap.backup", BACKUP_PASSPHRASE)
    assert (result.instances, result.missing) == (2, 1)
    with Vault.restore(result.path, tmp_path / "restored", BACKUP_PASSPHRASE, vault_passphrase=NEW_PASSPHRASE,
                       use_keyring=False) as restored:
        admin = restored.accounts.login("admin", env.accounts["admin"].password,
                                        env.accounts["admin"].codes.next())[1]
        report = restored.admin.verify(admin)
        assert report.instances == 3 and len(report.damaged) == 1  # said, not hidden


def test_a_hostile_header_cannot_make_the_key_derivation_take_the_machine(env: VaultEnv,
                                                                         tmp_path: Path) -> None:
    out, _ = _backed_up(env, tmp_path)
    data = out.read_bytes()
    start = len(MAGIC) + 4
    (length,) = struct.unpack(">I", data[len(MAGIC):start])
    header = json.loads(data[start:start + length])
    for field, value in (("memory_cost", 1 << 30),  # a terabyte of Argon2 memory
                         ("salt", "not base64!")):  # (found by the fuzzing runner: a crash before)
        changed = json.loads(json.dumps(header))
        changed["kdf"][field] = value
        encoded = json.dumps(changed, sort_keys=True).encode()
        out.write_bytes(MAGIC + struct.pack(">I", len(encoded)) + encoded + data[start + length:])
        with pytest.raises(BackupDamaged, match="header is damaged"):
            Vault.restore(out, tmp_path / "restored", BACKUP_PASSPHRASE, vault_passphrase=NEW_PASSPHRASE,
                          use_keyring=False)


def test_restore_never_overwrites_a_vault_and_backup_never_overwrites_a_file(env: VaultEnv,
                                                                           tmp_path: Path) -> None:
    out, _ = _backed_up(env, tmp_path)
    with pytest.raises(VaultExists):
        Vault.restore(out, env.home, BACKUP_PASSPHRASE, vault_passphrase=NEW_PASSPHRASE, use_keyring=False)
    with pytest.raises(CustodianError, match="already exists"):
        env.vault.admin.backup(env.login("admin"), out, BACKUP_PASSPHRASE)
    with pytest.raises(CustodianError, match="at least 16"):
        env.vault.admin.backup(env.login("admin"), tmp_path / "short.backup", "too short")


def test_cli_backup_and_restore(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    write_study(tmp_path / "in", Patient("BKP-2", "Backup^Bruno"), slices=2, size=16)
    assert cli_users.login("tech").returncode == 0
    assert cli("import", str(tmp_path / "in")).returncode == 0
    assert cli_users.login("admin").returncode == 0
    secret = {"CUSTODIAN_BACKUP_PASSPHRASE": BACKUP_PASSPHRASE}
    made = cli.json("backup", str(tmp_path / "site.backup"), extra_env=secret)
    assert made["instances"] == 2
    assert cli("backup", str(tmp_path / "site.backup"), extra_env=secret).returncode == 2  # exists

    restored = type(cli)(tmp_path / "elsewhere", {**cli.env, "CUSTODIAN_PASSPHRASE": NEW_PASSPHRASE})
    wrong = restored("restore", str(tmp_path / "site.backup"), "--key-storage", "passphrase",
                     extra_env={"CUSTODIAN_BACKUP_PASSPHRASE": "x" * 20})
    assert wrong.returncode == 4 and "passphrase is wrong" in wrong.stderr
    done = restored.json("restore", str(tmp_path / "site.backup"), "--key-storage", "passphrase",
                         extra_env=secret)
    assert done["key_storage"] == "passphrase"
    tech = CliUsers(restored, cli_users.codes, cli_users.passwords)
    assert tech.login("tech").returncode == 0
    assert restored.json("verify")["ok"] == 2
