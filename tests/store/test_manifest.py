"""The study manifest: grown batch by batch, equal to the one computed over all the study's rows,
blind to order, and carried over from vaults whose manifest was a hash over the sorted list."""

from __future__ import annotations

import pydicom
import pytest

from app.errors import IntegrityError
from app.store import importer, manifest
from app.vault import Vault
from tests.conftest import PASSPHRASE, VaultEnv, study_bytes


def _stored_and_recomputed(env: VaultEnv) -> list[tuple[bytes, bytes]]:
    return [(stored, actual) for stored, actual in env.vault._core.query(
        f"SELECT manifest, {manifest.OF_STUDY_ROWS} FROM studies")]


def test_a_manifest_grown_batch_by_batch_equals_the_one_over_all_rows(
        env: VaultEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "BATCH_INSTANCES", 3)  # seven instances: three commits
    items = study_bytes(slices=7, size=16)
    tech = env.login("tech")
    env.vault.intake.import_bytes(tech, items[:4])
    env.vault.intake.import_bytes(tech, items[4:])  # a second run adds to the study
    [(stored, actual)] = _stored_and_recomputed(env)
    assert len(stored) == manifest.SIZE and stored == actual and stored != manifest.EMPTY
    assert not env.vault.admin.verify(env.login("admin")).damaged


def test_the_manifest_ignores_order_and_sees_every_instance() -> None:
    pairs = [(f"1.2.3.{i}", f"{i:064x}") for i in range(50)]
    whole = manifest.extended(None, pairs)
    assert manifest.extended(None, reversed(pairs)) == whole
    assert manifest.extended(manifest.extended(None, pairs[:20]), pairs[20:]) == whole
    assert manifest.extended(None, pairs[:-1]) != whole  # one lost
    assert manifest.extended(None, [*pairs, pairs[0]]) != whole  # one twice
    assert manifest.extended(None, [*pairs[:-1], ("1.2.3.49", "f" * 64)]) != whole  # one changed


def test_an_added_instance_row_is_found(env: VaultEnv) -> None:
    items = study_bytes(slices=3, size=16)
    env.vault.intake.import_bytes(env.login("tech"), items)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    columns = [row[1] for row in env.vault._core.query("PRAGMA table_info(instances)")]
    copied = ", ".join({"sop_uid": "'1.2.3.999'", "blob": "blob || 'x'"}.get(c, c) for c in columns)
    with env.vault._core.transaction():  # a copy of a row under another UID
        env.vault._core.conn.execute(f"INSERT INTO instances ({', '.join(columns)}) SELECT {copied} "
                                "FROM instances WHERE sop_uid = ?", (ds.SOPInstanceUID,))
    reasons = {d.reason for d in env.vault.admin.verify(env.login("admin")).damaged}
    assert "study manifest does not match its instances" in reasons


def test_a_vault_from_before_gets_its_manifests_on_opening(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=4, size=16))
    expected = _stored_and_recomputed(env)
    with env.vault._core.transaction():  # the studies table as schema version 14 had it
        conn = env.vault._core.conn
        conn.execute("ALTER TABLE studies DROP COLUMN manifest")
        conn.execute("ALTER TABLE studies ADD COLUMN manifest_sha256 TEXT NOT NULL DEFAULT ''")
        conn.execute("ALTER TABLE sessions DROP COLUMN peer_uid")  # (version 17's)
        conn.execute("ALTER TABLE sessions DROP COLUMN ended_reason")  # (version 18's)
        conn.execute("ALTER TABLE users DROP COLUMN step_up_after")
        conn.execute("ALTER TABLE users DROP COLUMN login_failures")  # (version 19's)
        conn.execute("ALTER TABLE users DROP COLUMN login_locked_until")
        for column in ("directory_dn", "directory_checked_at", "directory_login_at"):  # (version 20's)
            conn.execute(f"ALTER TABLE users DROP COLUMN {column}")
        conn.execute("ALTER TABLE sessions DROP COLUMN offline")
        conn.execute("PRAGMA user_version = 14")
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    env.sessions.clear()
    assert _stored_and_recomputed(env) == expected
    columns = {row[1] for row in env.vault._core.query("PRAGMA table_info(studies)")}
    assert "manifest" in columns and "manifest_sha256" not in columns
    assert not env.vault.admin.verify(env.login("admin")).damaged


def test_a_damaged_manifest_stops_additions_to_its_study_and_verify_names_it(env: VaultEnv) -> None:
    items = study_bytes(slices=3, size=16)
    tech = env.login("tech")
    env.vault.intake.import_bytes(tech, items[:2])
    with env.vault._core.transaction():
        env.vault._core.conn.execute("UPDATE studies SET manifest = x'00ff'")
    with pytest.raises(IntegrityError, match="manifest in the index is damaged"):
        env.vault.intake.import_bytes(tech, items[2:])
    damaged = env.vault.admin.verify(env.login("admin")).damaged
    assert [(d.reason, d.study_uid) for d in damaged] == [
        ("study manifest does not match its instances",
         env.vault.reading.studies(env.login("rad"))[0].study_uid)]
