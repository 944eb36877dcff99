"""The vault: encryption at rest, integrity, duplicates, shredding, key rotation, the session gate."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pydicom
import pytest

from app.demo.studies import Patient, to_bytes
from app.errors import (
    CustodianError,
    NotAuthenticated,
    NotPermitted,
    UsageError,
    VaultExists,
    VaultLocked,
)
from app.security.keys import KeyStore
from app.security.roles import Role
from app.store import index
from app.store.blobs import BlobDamaged, instance_aad, unseal
from app.vault import Vault
from tests.conftest import ADMIN_PASSWORD, PASSPHRASE, VaultEnv, study_bytes, write_study

NAME = "Zyxwvutson^Quirinus"


def _all_bytes(home: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in home.rglob("*") if p.is_file()]


def test_nothing_readable_on_disk(env: VaultEnv, tmp_path: Path) -> None:
    """No plaintext DICOM, patient name, UID or pixel bytes in any file of the home."""
    files = write_study(tmp_path / "in", Patient("PID-778899", NAME), slices=5, size=64)
    report = env.vault.intake.import_paths(env.login("tech"), [tmp_path / "in", tmp_path / "junk.txt"])
    assert report.imported == 5
    ds = pydicom.dcmread(files[0])
    needles = [NAME.encode(), b"Zyxwvutson", b"PID-778899", b"DICM",
               ds.StudyInstanceUID.encode(), ds.SOPInstanceUID.encode(), bytes(ds.PixelData[4000:4032]),
               b"CT CHEST"]
    for path, data in _all_bytes(env.home):
        for needle in needles:
            assert needle not in data, f"{needle[:20]!r} found in {path.name}"


def test_quarantine_is_encrypted(env: VaultEnv, tmp_path: Path) -> None:
    secret = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + secret)
    report = env.vault.intake.import_paths(env.login("tech"), [bad])
    assert report.imported == 0 and report.rejected[0].reason
    assert all(secret not in data for _, data in _all_bytes(env.home))
    items = env.vault.intake.quarantined(env.login("tech"))
    assert items[0].reason == report.rejected[0].reason and items[0].source == str(bad)


def test_flipped_byte_in_any_blob_is_reported(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=6, size=32))
    blobs = sorted((env.home / "blobs").rglob("*"))
    blobs = [b for b in blobs if b.is_file()]
    assert len(blobs) == 6
    positions = [0, 6, 20, None, -1, -20]  # magic, nonce, ciphertext, middle, tag end, tag
    for blob, pos in zip(blobs, positions, strict=True):
        data = bytearray(blob.read_bytes())
        i = len(data) // 2 if pos is None else pos
        data[i] ^= 0x01
        blob.write_bytes(bytes(data))
    report = env.vault.admin.verify(env.login("admin"))
    assert report.instances == 6 and report.ok == 0
    assert len({d.sop_instance_uid for d in report.damaged}) == 6


def test_swapped_or_missing_blobs_are_reported(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=3, size=32))
    a, b, c = sorted(p for p in (env.home / "blobs").rglob("*") if p.is_file())
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    c.unlink()
    report = env.vault.admin.verify(env.login("admin"))
    reasons = sorted(d.reason for d in report.damaged if d.sop_instance_uid)
    assert report.ok == 0
    assert reasons.count("blob file is missing") == 1
    assert sum("failed authentication" in r for r in reasons) == 2


def test_duplicates_and_conflicts(env: VaultEnv) -> None:
    items = study_bytes(slices=4, size=32)
    tech = env.login("tech")
    assert env.vault.intake.import_bytes(tech, items).imported == 4
    again = env.vault.intake.import_bytes(tech, items + items[:1])
    assert (again.imported, again.duplicates, again.rejected) == (0, 5, [])
    altered = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    altered.StudyDescription = "CHANGED"
    conflict = env.vault.intake.import_bytes(tech, [("changed", to_bytes(altered))])
    assert conflict.rejected[0].reason.startswith("a different object with the same SOP Instance UID")
    other_patient = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[1][1]))
    other_patient.PatientID = "SOMEONE-ELSE"
    other_patient.SOPInstanceUID = pydicom.uid.generate_uid()
    moved = env.vault.intake.import_bytes(tech, [("moved", to_bytes(other_patient))])
    assert moved.rejected[0].reason == "its study is already cached under a different Patient ID"
    assert env.vault.admin.verify(env.login("admin")).damaged == []


def test_duplicate_within_one_batch(env: VaultEnv) -> None:
    items = study_bytes(slices=2, size=32)
    report = env.vault.intake.import_bytes(env.login("tech"), items + items)
    assert (report.imported, report.duplicates) == (2, 2)


def test_read_back_is_byte_identical(env: VaultEnv) -> None:
    items = study_bytes(slices=2, size=32)
    env.vault.intake.import_bytes(env.login("tech"), items)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[1][1]))
    assert env.vault.reading.read_instance(env.login("rad"), ds.SOPInstanceUID) == items[1][1]


def test_shred_destroys_the_key(env: VaultEnv) -> None:
    items = study_bytes(slices=3, size=32)
    keep = study_bytes(Patient("PID-2", "Other^Person"), slices=2, size=32)
    env.vault.intake.import_bytes(env.login("tech"), items + keep)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    row = env.vault._core.query("SELECT blob FROM instances WHERE sop_uid = ?", (ds.SOPInstanceUID,))
    sealed = env.vault._core.blobs.path(row[0][0]).read_bytes()  # a copy an attacker kept
    env.add("privacy", Role.PRIVACY_OFFICER)
    officer = env.login("privacy")
    with pytest.raises(CustodianError, match="reason"):
        env.vault.admin.shred(officer, ds.StudyInstanceUID, "  ")
    assert env.vault.admin.shred(officer, ds.StudyInstanceUID, "patient request, ticket 42") == 3
    assert [s.patient_id for s in env.vault.reading.studies(env.login("rad"))] == ["PID-2"]
    assert not env.vault._core.blobs.path(row[0][0]).exists()
    # No data key left in the vault opens the copy.
    env.vault.close()
    vault = Vault.open(env.home, lambda: PASSPHRASE)
    env.vault = vault
    for context, kid, wrapped in vault._core.query("SELECT context, kid, wrapped FROM data_keys"):
        dek = vault._core.keys.unwrap_data_key(kid, wrapped, context)
        with pytest.raises(BlobDamaged):
            unseal(dek, sealed, instance_aad(ds.SOPInstanceUID))
    assert vault.admin.verify(env.login("admin")).damaged == []
    shreds = [r for r in vault._gate._audit.records() if r.type == "shred"]
    assert shreds[0].detail["reason"] == "patient request, ticket 42"


def test_key_rotation_rewraps_without_reencrypting(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=3, size=32))
    blob_files = {p: p.read_bytes() for p in (env.home / "blobs").rglob("*") if p.is_file()}
    keystore_before = (env.home / "keystore.json").read_text()
    old_kid = env.vault._core.keys.current_kid
    assert env.vault.admin.rotate_keys(env.login("admin"), PASSPHRASE) == 2  # the study key, the audit key
    assert env.vault._core.keys.current_kid != old_kid
    assert (env.home / "keystore.json").read_text() != keystore_before
    assert old_kid not in (env.home / "keystore.json").read_text()
    assert all(p.read_bytes() == data for p, data in blob_files.items())  # images untouched
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    assert env.vault.admin.verify(env.login("admin")).ok == 3


def test_wrong_passphrase_is_refused(env: VaultEnv) -> None:
    with pytest.raises(VaultLocked, match="passphrase is wrong"):
        Vault.open(env.home, lambda: "not the passphrase")
    with pytest.raises(VaultLocked, match="passphrase"):
        Vault.open(env.home, lambda: None)


def test_init_refuses_an_existing_vault(env: VaultEnv) -> None:
    before = (env.home / "keystore.json").read_bytes()
    with pytest.raises(VaultExists):
        Vault.create(env.home, admin="x", password="another-long-password", passphrase="p",
                     use_keyring=False)
    assert (env.home / "keystore.json").read_bytes() == before


def test_gate_refuses_without_live_session(env: VaultEnv) -> None:
    rad = env.login("rad")
    env.vault.accounts.logout(rad)
    with pytest.raises(NotAuthenticated):
        env.vault.reading.studies(rad)
    with pytest.raises(NotAuthenticated):
        env.vault.accounts.resume("forged-token")
    refused = [r for r in env.vault._gate._audit.records() if r.type == "access-refused"]
    assert len(refused) == 2


def test_gate_enforces_roles_and_audits(env: VaultEnv) -> None:
    admin = env.login("admin")
    with pytest.raises(NotPermitted, match="admin role may not list studies"):
        env.vault.reading.studies(admin)
    with pytest.raises(NotPermitted):
        env.vault.intake.import_bytes(admin, study_bytes(slices=1, size=16))
    with pytest.raises(NotPermitted):
        env.vault.admin.add_user(env.login("rad"), "mallory", Role.ADMIN, "a-long-enough-password")
    refused = [r for r in env.vault._gate._audit.records() if r.type == "access-refused"]
    assert {r.detail["action"] for r in refused} == {"list studies", "import", "manage users"}


def _idle(env: VaultEnv, session: object, seconds: float) -> None:
    """Make a session look as if its user walked away ``seconds`` ago."""
    with env.vault._core.transaction():
        env.vault._core.conn.execute("UPDATE sessions SET last_seen = last_seen - ? WHERE token_hash = ?",
                                (seconds, session.token_hash))


def test_inactivity_and_disable_end_sessions(env: VaultEnv) -> None:
    rad = env.login("rad")
    _idle(env, rad, 9 * 60)
    env.vault.reading.studies(rad)  # 9 minutes idle: still fine under the default 10
    _idle(env, rad, 10 * 60 + 1)
    with pytest.raises(NotAuthenticated, match="inactivity"):
        env.vault.reading.studies(rad)
    tech = env.login("tech")
    env.vault.reading.studies(tech)
    env.vault.admin.disable_user(env.login("admin"), "tech")
    with pytest.raises(NotAuthenticated):
        env.vault.reading.studies(tech)


def test_site_and_user_can_only_shorten_the_idle_limit(env: VaultEnv) -> None:
    admin = env.login("admin")
    with pytest.raises(UsageError, match="from 30 to 600"):
        env.vault.admin.set_policy(admin, "inactivity_seconds", "900")
    env.vault.admin.set_policy(admin, "inactivity_seconds", "300")
    rad = env.login("rad")
    _idle(env, rad, 301)
    with pytest.raises(NotAuthenticated, match="inactivity"):
        env.vault.reading.studies(rad)
    rad = env.login("rad", fresh=True)
    with pytest.raises(UsageError):
        env.vault.accounts.set_own_inactivity(rad, 600)  # longer than the site allows
    assert env.vault.accounts.set_own_inactivity(rad, 60) == 60
    _idle(env, rad, 61)
    with pytest.raises(NotAuthenticated):
        env.vault.reading.studies(rad)
    changes = [r for r in env.vault._gate._audit.records() if r.type == "security-configuration"]
    assert changes[0].detail == {"setting": "inactivity_seconds", "value": "300"}


def test_absolute_limit_forces_a_new_login(env: VaultEnv) -> None:
    rad = env.login("rad")
    with env.vault._core.transaction():
        env.vault._core.conn.execute("UPDATE sessions SET expires_at = ? WHERE token_hash = ?",
                                (time.time() - 1, rad.token_hash))
    with pytest.raises(NotAuthenticated, match="time limit"):
        env.vault.reading.studies(rad)


def test_reading_needs_a_live_session_per_frame(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=3, size=32))
    rad = env.login("rad")
    study = env.vault.reading.studies(rad)[0]
    images = env.vault.reading.open_series(rad, env.vault.reading.series(rad, study.study_uid)[0].series_uid)
    images.raw(0)
    env.vault.accounts.logout(rad)
    with pytest.raises(NotAuthenticated):
        images.raw(2)


def test_manifest_detects_a_dropped_instance(env: VaultEnv) -> None:
    items = study_bytes(slices=3, size=32)
    env.vault.intake.import_bytes(env.login("tech"), items)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    with env.vault._core.transaction():
        env.vault._core.conn.execute("DELETE FROM instances WHERE sop_uid = ?", (ds.SOPInstanceUID,))
    report = env.vault.admin.verify(env.login("admin"))
    assert [d.reason for d in report.damaged] == ["study manifest does not match its instances"]


def test_series_volume_and_order(env: VaultEnv) -> None:
    items = study_bytes(slices=5, size=32)
    env.vault.intake.import_bytes(env.login("tech"), list(reversed(items)))
    rad = env.login("rad")
    study = env.vault.reading.studies(rad)[0]
    images = env.vault.reading.open_series(rad, env.vault.reading.series(rad, study.study_uid)[0].series_uid)
    volume = images.volume()
    expected = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(d)).pixel_array for _, d in items]
    assert volume.shape == (5, 32, 32)
    for i in range(5):  # slice order follows position, not import order
        assert (volume[i] == expected[i]).all()
    assert hashlib.sha256(volume.tobytes()).hexdigest()


def test_index_cipher_settings_are_kept_per_vault(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def make(home: Path) -> None:
        Vault.create(home, admin="admin", password=ADMIN_PASSWORD, passphrase=PASSPHRASE,
                     use_keyring=False)[0].close()

    make(tmp_path / "new")
    current = KeyStore.load(tmp_path / "new").index_cipher
    assert current == index.NEW_INDEX_CIPHER and current["cipher_page_size"] == 16384
    # A vault made before the settings were recorded uses SQLCipher's defaults, and still opens.
    monkeypatch.setattr(index, "NEW_INDEX_CIPHER", {})
    make(tmp_path / "older")
    store = KeyStore.load(tmp_path / "older")
    assert store.index_cipher == {}
    Vault.open(tmp_path / "older", lambda: PASSPHRASE).close()
    # The settings are needed to read the index: the wrong ones look like a wrong key.
    store.index_cipher = current
    store.save()
    with pytest.raises(VaultLocked):
        Vault.open(tmp_path / "older", lambda: PASSPHRASE)
    store.index_cipher = {"cipher_page_size": "4096; DROP TABLE users"}
    store.save()
    with pytest.raises(CustodianError, match="index setting"):
        Vault.open(tmp_path / "older", lambda: PASSPHRASE)
