"""User names are one name whatever their case: `Rad` cannot be added beside `rad`, `RAD` logs in as
`rad` and the trail names the account as it is spelt; renaming; and the upgrade of a vault that
allowed both, which merges nothing: it refuses, naming them, until one is renamed."""

from __future__ import annotations

import os

import pytest

from app.errors import NamesClash, UsageError
from app.security.roles import Role
from app.store import index
from app.vault import Vault
from tests.conftest import PASSPHRASE, Cli, VaultEnv


def vault_of_before(env: VaultEnv) -> None:
    """``env``'s vault as schema 18 left it, with an account 'RAD' beside 'rad' (it allowed that)."""
    with env.vault._core.transaction() as conn:
        conn.execute("DROP INDEX users_name_nocase")
        conn.execute("ALTER TABLE users DROP COLUMN login_failures")
        conn.execute("ALTER TABLE users DROP COLUMN login_locked_until")
        for column in ("directory_dn", "directory_checked_at", "directory_login_at"):  # (schema 20's)
            conn.execute(f"ALTER TABLE users DROP COLUMN {column}")
        conn.execute("ALTER TABLE sessions DROP COLUMN offline")
        conn.execute("INSERT INTO users (name, role, password_hash, totp_secret, created_at) "
                     "SELECT 'RAD', 'technologist', password_hash, totp_secret, created_at FROM users "
                     "WHERE name = 'rad'")
        conn.execute("PRAGMA user_version = 18")
    env.vault.close()
    env.sessions.clear()


def test_a_name_in_another_case_is_the_same_name(env: VaultEnv) -> None:
    admin = env.login("admin")
    with pytest.raises(UsageError) as taken:
        env.vault.admin.add_user(admin, "Rad", Role.ADMIN, "a long secret phrase 1")
    assert str(taken.value) == ("A user named 'rad' already exists (user names are the same whatever "
                                "their case).")
    account = env.accounts["rad"]
    _, session = env.vault.accounts.login("RAD", account.password, account.codes.next())
    login = env.vault._gate._audit.records()[0]  # the newest
    assert login.type == "login" and login.outcome == 0 and login.user == "rad"
    assert session.user.name == "rad" and session.user.id == env.login("rad").user.id
    assert [u.name for u in env.vault.admin.list_users(admin)] == ["admin", "rad", "tech"]


def test_an_administrator_renames_a_user(env: VaultEnv) -> None:
    admin, rad = env.login("admin"), env.login("rad")
    with pytest.raises(UsageError, match="A user named 'tech' already exists"):
        env.vault.admin.rename_user(admin, "rad", "TECH")
    with pytest.raises(UsageError, match="user name is 1–64"):
        env.vault.admin.rename_user(admin, "rad", "dr rad")
    assert env.vault.admin.rename_user(admin, "RAD", "rad.kowalski").name == "rad.kowalski"
    assert env.vault.accounts.whoami(rad).user.name == "rad.kowalski"  # the live session goes on
    assert env.vault.admin.rename_user(admin, "rad.kowalski", "Rad.Kowalski").name == "Rad.Kowalski"
    account = env.accounts["rad"]
    _, session = env.vault.accounts.login("rad.kowalski", account.password, account.codes.next())
    assert session.user.name == "Rad.Kowalski"
    renames = [r.detail for r in env.vault._gate._audit.records() if r.detail.get("renamed")]
    assert renames == [{"renamed": "rad.kowalski", "to": "Rad.Kowalski"},  # (newest first)
                       {"renamed": "rad", "to": "rad.kowalski"}]
    assert all(r.user == "admin" for r in env.vault._gate._audit.records() if r.detail.get("renamed"))


def test_the_upgrade_merges_nothing_and_names_the_clash(env: VaultEnv) -> None:
    rad_id = env.login("rad").user.id
    vault_of_before(env)
    for _ in range(2):  # refused, and nothing changed by the refusal
        with pytest.raises(NamesClash) as refused:
            Vault.open(env.home, lambda: PASSPHRASE)
        assert "user names that differ only in case belong to different accounts (RAD and rad)" in str(
            refused.value)
        assert "Nothing was merged or changed" in str(refused.value)
        assert "custodian user rename NAME NEW-NAME" in str(refused.value)
    with pytest.raises(NamesClash):  # a rename that leaves the clash is not made either
        Vault.open(env.home, lambda: PASSPHRASE, {"tech": "tech2"})
    with pytest.raises(UsageError, match="A user named 'rad' already exists"):
        Vault.open(env.home, lambda: PASSPHRASE, {"RAD": "rad"})

    env.vault = Vault.open(env.home, lambda: PASSPHRASE, {"RAD": "rad2"})
    users = {u.name: u for u in env.vault.admin.list_users(env.login("admin"))}
    assert set(users) == {"admin", "rad", "rad2", "tech"}  # two accounts still, and tech kept its name
    assert users["rad"].id == rad_id and users["rad"].role is Role.RADIOLOGIST
    assert users["rad2"].role is Role.TECHNOLOGIST
    (renamed,) = [r for r in env.vault._gate._audit.records() if r.detail.get("renamed")]
    assert renamed.detail == {"renamed": "RAD", "to": "rad2", "before_upgrade": True}
    assert env.vault._core.query("PRAGMA user_version") == [(index.SCHEMA_VERSION,)]
    with pytest.raises(UsageError, match="need no renaming"):
        Vault.open(env.home, lambda: PASSPHRASE, {"rad2": "rad3"})


def test_the_cli_renames_past_a_refused_upgrade(env: VaultEnv) -> None:
    vault_of_before(env)
    cli = Cli(env.home, {**{k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")},
                         "CUSTODIAN_PASSPHRASE": PASSPHRASE})
    refused = cli("studies")
    assert refused.returncode == 1 and "(RAD and rad)" in refused.stderr and "Traceback" not in refused.stderr
    renamed = cli.json("user", "rename", "RAD", "rad.tech")
    assert renamed == [{"user": "rad.tech", "renamed_from": "RAD"}]
    assert cli("studies").returncode == 3  # opens now; nobody is logged in
