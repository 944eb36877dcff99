"""Accounts: password rules, TOTP window and replay, recovery codes, uniform failure message."""

from __future__ import annotations

import time

import pytest

from app.errors import AuthenticationFailed, UsageError
from app.security import totp
from app.security.accounts import LOGIN_FAILED
from app.security.roles import Role
from tests.conftest import VaultEnv, password_for


def test_password_rules(env: VaultEnv) -> None:
    admin = env.login("admin")
    with pytest.raises(UsageError, match="at least 12"):
        env.vault.admin.add_user(admin, "shortpw", Role.RADIOLOGIST, "elevenchars")
    env.vault.admin.add_user(admin, "longpw", Role.RADIOLOGIST, "just twelve!")  # no composition rules
    with pytest.raises(UsageError, match="already exists"):
        env.vault.admin.add_user(admin, "longpw", Role.RADIOLOGIST, "another password")
    with pytest.raises(UsageError, match="user name"):
        env.vault.admin.add_user(admin, "bad name!", Role.RADIOLOGIST, "another password")


def test_totp_window_and_replay(env: VaultEnv) -> None:
    admin = env.login("admin")
    enrolment = env.vault.admin.add_user(admin, "doc", Role.RADIOLOGIST, "a long secret phrase 1")
    now = time.time()
    stale = totp.current_code(enrolment.totp_secret, at=now - 95)
    with pytest.raises(AuthenticationFailed):
        env.vault.accounts.login("doc", "a long secret phrase 1", stale)
    code = totp.current_code(enrolment.totp_secret, at=now)
    env.vault.accounts.login("doc", "a long secret phrase 1", code)
    with pytest.raises(AuthenticationFailed, match="not correct"):
        env.vault.accounts.login("doc", "a long secret phrase 1", code)  # replay
    earlier = totp.current_code(enrolment.totp_secret, at=now - 30)
    with pytest.raises(AuthenticationFailed):
        env.vault.accounts.login("doc", "a long secret phrase 1", earlier)  # older than one already used
    env.vault.accounts.login("doc", "a long secret phrase 1",
                             totp.current_code(enrolment.totp_secret, at=now + 30))


def test_recovery_code_works_once(env: VaultEnv) -> None:
    enrolment = env.vault.admin.add_user(env.login("admin"), "doc", Role.RADIOLOGIST,
                                         "a long secret phrase 1")
    code = enrolment.recovery_codes[0]
    assert len(set(enrolment.recovery_codes)) == 10
    env.vault.accounts.login("doc", "a long secret phrase 1", code.upper())
    with pytest.raises(AuthenticationFailed):
        env.vault.accounts.login("doc", "a long secret phrase 1", code)


def test_same_message_for_every_failure(env: VaultEnv) -> None:
    messages = set()
    for name, password, code in [("nobody", "whatever-password", "123456"),
                                 ("rad", "wrong-password-here", "123456"),
                                 ("rad", password_for("rad"), "000000"),
                                 ("rad", password_for("rad"), "not-a-code")]:
        with pytest.raises(AuthenticationFailed) as exc:
            env.vault.accounts.login(name, password, code)
        messages.add(str(exc.value))
    assert messages == {LOGIN_FAILED}
    failures = [r for r in env.vault._gate._audit.records() if r.type == "login" and r.outcome == 4]
    assert len(failures) == 4


def test_passwords_are_not_stored(env: VaultEnv) -> None:
    rows = env.vault._core.query("SELECT password_hash FROM users")
    assert all(h.startswith("$argon2id$") for (h,) in rows)
    codes = env.vault._core.query("SELECT code_hash FROM recovery_codes")
    assert all(len(h) == 64 for (h,) in codes)
