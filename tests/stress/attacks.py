"""Attacks on authentication, as figures: online guessing, TOTP replay, recovery-code reuse, and
session tokens used after logout or carried to another workstation.

Shared by the CI subset (tests/stress/test_attacks.py) and the long runner (tests/stress/run.py).
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from app.errors import AuthenticationFailed, CustodianError, NotAuthenticated
from app.security.roles import Role
from app.store.core import TOKEN_FILE
from tests.conftest import VaultEnv, make_env


@dataclass
class Attack:
    what: str
    attempts: int = 0
    got_in: int = 0  # attempts that gave the attacker a session: must stay 0
    figure: str = ""
    seconds: float = 0.0


def online_guessing(env: VaultEnv, attempts: int) -> list[Attack]:
    """Wrong passwords for a known account as fast as the vault answers; then the owner's right
    password and code while the lock holds; and guesses at names that do not exist."""
    policy = env.vault.policy
    account = env.add(f"target{secrets.token_hex(2)}", Role.RADIOLOGIST)
    started = time.perf_counter()
    guessing = Attack(f"online guessing of one account's password ({attempts} tries)")
    messages = set()
    for _ in range(attempts):
        guessing.attempts += 1
        try:
            env.vault.accounts.login(account.name, secrets.token_urlsafe(12),
                                     f"{secrets.randbelow(10**6):06d}")
            guessing.got_in += 1
        except AuthenticationFailed as exc:
            messages.add(str(exc))
    try:  # the real owner, with the right password and code, while the account is locked
        env.vault.accounts.login(account.name, account.password, account.codes.next())
        guessing.got_in += 1  # the lock did not hold
        held = "did NOT hold"
    except AuthenticationFailed:
        held = "held"
    guessing.seconds = time.perf_counter() - started
    per_day = policy.lockout_failures * 86400 // policy.lockout_seconds
    guessing.figure = (f"locked after {policy.lockout_failures} failures for {policy.lockout_seconds // 60} "
                       f"min (the lock {held} against the right password): at most {per_day} guesses a "
                       f"day per account; {len(messages)} distinct message(s)")
    started = time.perf_counter()
    unknown = Attack(f"guessing names that do not exist ({attempts // 10} tries)")
    for _ in range(attempts // 10):
        unknown.attempts += 1
        try:
            env.vault.accounts.login(f"nobody{secrets.token_hex(3)}", "wrong password entirely", "123456")
            unknown.got_in += 1
        except AuthenticationFailed as exc:
            messages.add(str(exc))
    unknown.seconds = time.perf_counter() - started
    unknown.figure = (f"{len(messages)} distinct message(s) for unknown names and wrong passwords "
                      "(no way to tell which names exist)")
    return [guessing, unknown]


def totp_replay(env: VaultEnv, attempts: int) -> Attack:
    """A code seen over the shoulder (or phished) used again, with the right password."""
    attack, started = Attack(f"replay of a used authenticator code ({attempts} tries)"), time.perf_counter()
    account = env.add(f"replayed{secrets.token_hex(2)}", Role.RADIOLOGIST)
    code = account.codes.next()
    env.vault.accounts.login(account.name, account.password, code)
    for _ in range(attempts):
        attack.attempts += 1
        try:
            env.vault.accounts.login(account.name, account.password, code)
            attack.got_in += 1
        except AuthenticationFailed:
            pass
        _unlock(env, account.name)  # so the replay, not the lockout, is what refuses it
    attack.seconds = time.perf_counter() - started
    attack.figure = "each code works once, within ±1 time step"
    return attack


def recovery_reuse(env: VaultEnv, codes: int) -> Attack:
    attack, started = Attack(f"reuse of a spent recovery code ({codes} codes)"), time.perf_counter()
    password = "a long secret phrase for recovery"
    name = f"rec{secrets.token_hex(2)}"
    enrolment = env.vault.admin.add_user(env.login("admin"), name, Role.RADIOLOGIST, password)
    for code in enrolment.recovery_codes[:codes]:
        env.vault.accounts.login(name, password, code)
        attack.attempts += 1
        try:
            env.vault.accounts.login(name, password, code)
            attack.got_in += 1
        except AuthenticationFailed:
            pass
        _unlock(env, name)
    attack.seconds = time.perf_counter() - started
    attack.figure = "a spent code is refused; a code login forces re-enrolment"
    return attack


def stolen_tokens(env: VaultEnv, elsewhere: Path) -> Attack:
    """A session token reused after logout, and the token file carried to another workstation."""
    attack, started = Attack("session token after logout, or copied to another home"), time.perf_counter()
    account = env.accounts["admin"]
    token, session = env.vault.accounts.login("admin", account.password, account.codes.next())
    env.vault.accounts.logout(session)
    attack.attempts += 1
    try:
        env.vault.accounts.resume(token)
        attack.got_in += 1
    except NotAuthenticated:
        pass
    token, _ = env.vault.accounts.login("admin", account.password, account.codes.next())
    env.vault.accounts.save_token(token)
    other = make_env(elsewhere)
    shutil.copy2(env.home / TOKEN_FILE, elsewhere / TOKEN_FILE)  # the sealed token file
    for attempt in (lambda: other.vault.accounts.resume(other.vault.accounts.load_token()),
                    lambda: other.vault.accounts.resume(token)):
        attack.attempts += 1
        try:
            attempt()
            attack.got_in += 1
        except CustodianError:
            pass
    other.vault.close()
    attack.seconds = time.perf_counter() - started
    attack.figure = "ended sessions stay ended; a token means nothing to another vault"
    return attack


def _unlock(env: VaultEnv, name: str) -> None:
    with env.vault._core.transaction():
        env.vault._core.conn.execute("UPDATE users SET login_locked_until = 0, login_failures = 0 "
                                     "WHERE name = ?", (name,))


def run_all(work: Path, attempts: int) -> list[Attack]:
    env = make_env(work / "attacked")
    try:
        return [*online_guessing(env, attempts), totp_replay(env, max(3, attempts // 20)),
                recovery_reuse(env, min(10, max(3, attempts // 100))), stolen_tokens(env, work / "elsewhere")]
    finally:
        env.vault.close()
