"""Nobody can keep an account locked out: the owner's one-time recovery code and password log in
through a lock (the only administrator's included), and guessing gets no further through it than
through the lock itself."""

from __future__ import annotations

import time

import pytest

from app.audit.log import AuditRecord
from app.errors import AuthenticationFailed, EnrolmentRequired, NotAuthenticated
from app.security import totp
from app.security.accounts import LOGIN_FAILED, Enrolment
from app.security.roles import Role
from app.security.sessions import Session
from tests.conftest import ADMIN_PASSWORD, VaultEnv
from tests.security.test_step_up import lock_after, wrong_code


def lock_by_strangers(env: VaultEnv, name: str) -> None:
    """What anyone at any login screen can do: wrong passwords for ``name`` until it locks."""
    for _ in range(env.vault.policy.lockout_failures):
        with pytest.raises(AuthenticationFailed):
            env.vault.accounts.login(name, "wrong password entirely", "123456")


def reenrolled(env: VaultEnv, session: Session) -> tuple[Session, str]:
    """A recovery-code session sets up its authenticator again before anything else; the new
    authenticator's secret."""
    fresh = env.vault.accounts.begin_reenrolment(session)
    return (env.vault.accounts.finish_reenrolment(session, fresh, totp.current_code(fresh.totp_secret)),
            fresh.totp_secret)


def next_code(secret: str) -> str:
    """A code of the next time step (re-enrolment spent this one)."""
    return totp.current_code(secret, at=time.time() + totp.STEP)


def logins(env: VaultEnv, name: str) -> list[AuditRecord]:
    """``name``'s login records, oldest first."""
    return [r for r in reversed(env.vault._gate._audit.records()) if r.user == name and r.type == "login"]


@pytest.fixture
def admin_codes(env: VaultEnv) -> Enrolment:
    """The authenticator and recovery codes of the vault's only administrator, as `enrol` makes them."""
    admin = env.login("admin")
    fresh = env.vault.accounts.begin_reenrolment(admin)
    env.vault.accounts.finish_reenrolment(admin, fresh, totp.current_code(fresh.totp_secret))
    env.vault.accounts.logout(admin)
    del env.accounts["admin"], env.sessions["admin"]  # (its codes are these now)
    return fresh


def test_the_only_administrator_gets_in_through_a_strangers_lock(env: VaultEnv,
                                                                 admin_codes: Enrolment) -> None:
    lock_by_strangers(env, "admin")
    with pytest.raises(AuthenticationFailed) as refused:  # password and authenticator: locked
        env.vault.accounts.login("admin", ADMIN_PASSWORD, next_code(admin_codes.totp_secret))
    assert str(refused.value) == LOGIN_FAILED

    _, session = env.vault.accounts.login("admin", ADMIN_PASSWORD, admin_codes.recovery_codes[0])
    assert session.needs_enrolment
    with pytest.raises(EnrolmentRequired):
        env.vault.admin.list_users(session)
    session, secret = reenrolled(env, session)
    assert {u.name for u in env.vault.admin.list_users(session)} == {"admin", "rad", "tech"}
    assert logins(env, "admin")[-1].detail == {"recovery_code": True, "method": "local", "through_lock": True}

    with pytest.raises(AuthenticationFailed):  # the lock still holds for the password and code
        env.vault.accounts.login("admin", ADMIN_PASSWORD, next_code(secret))
    with pytest.raises(AuthenticationFailed):  # and the code went with its one use
        env.vault.accounts.login("admin", ADMIN_PASSWORD, admin_codes.recovery_codes[0])


def test_guesses_get_nothing_through_a_lock(env: VaultEnv, admin_codes: Enrolment) -> None:
    """A wrong recovery code with the right password, or the right code with a wrong password, is
    refused with the one message and counted; the right code stays unspent for its owner."""
    lock_by_strangers(env, "admin")
    before = len(logins(env, "admin"))
    wrong = "wrong password entirely"
    for password, code in ((ADMIN_PASSWORD, "abcd-efgh-jkmn"), (wrong, admin_codes.recovery_codes[1]),
                           (wrong, "abcd-efgh-jkmn")):
        with pytest.raises(AuthenticationFailed) as refused:
            env.vault.accounts.login("admin", password, code)
        assert str(refused.value) == LOGIN_FAILED
    assert [r.outcome for r in logins(env, "admin")[before:]] == [4, 4, 4]
    env.vault.accounts.login("admin", ADMIN_PASSWORD, admin_codes.recovery_codes[1])


def test_a_recovery_code_lifts_the_lock_that_ended_the_sessions(env: VaultEnv) -> None:
    """After wrong step-up codes ended the owner's sessions, the recovery login's new session is not
    refused its own step-ups by that lock."""
    lock_after(env, 3)
    password = "a long secret phrase 1"
    enrolment = env.vault.admin.add_user(env.login("admin"), "doc", Role.RADIOLOGIST, password)
    _, doc = env.vault.accounts.login("doc", password, totp.current_code(enrolment.totp_secret))
    for _ in range(3):
        with pytest.raises((AuthenticationFailed, NotAuthenticated)):
            env.vault.accounts.step_up(doc, wrong_code(enrolment.totp_secret))
    with pytest.raises(NotAuthenticated, match="locked after repeated failed codes"):
        env.vault.reading.studies(doc)

    _, doc = env.vault.accounts.login("doc", password, enrolment.recovery_codes[0])
    doc, secret = reenrolled(env, doc)
    env.vault.accounts.step_up(doc, next_code(secret))
    env.vault.reading.studies(doc)


def test_wrong_current_passwords_end_the_session_as_wrong_codes_do(env: VaultEnv) -> None:
    """`passwd` checks the current password inside the session: whoever holds it guesses no further
    than with step-up codes."""
    lock_after(env, 3)
    rad = env.login("rad")
    for _ in range(2):
        with pytest.raises(AuthenticationFailed, match="current password is not correct"):
            env.vault.accounts.change_password(rad, "not my password at all", "a brand new phrase 9")
    with pytest.raises(NotAuthenticated) as ended:
        env.vault.accounts.change_password(rad, "not my password at all", "a brand new phrase 9")
    assert str(ended.value).startswith("This account is locked after repeated failed passwords: the session")
    with pytest.raises(NotAuthenticated):
        env.vault.reading.studies(rad)
