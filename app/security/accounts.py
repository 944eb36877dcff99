"""User accounts: Argon2id password hashes, TOTP secrets, one-time recovery codes.

All of it lives in the encrypted index. Every failed login gets the same message whether the
user is unknown, the password wrong or the code wrong, so the message reveals nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import sqlcipher3

from app.errors import AuthenticationFailed, CustodianError, UsageError
from app.security import passwords, totp
from app.security.roles import Role

LOGIN_FAILED = "Login failed: the user name, password or code is not correct."
RECOVERY_CODES = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    disabled: bool


@dataclass(frozen=True)
class Enrolment:
    """What a new account's owner needs once: the TOTP URI and the recovery codes."""

    user: User
    totp_secret: str
    totp_uri: str
    recovery_codes: list[str]


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _recovery_hash(code: str) -> str:
    # 59 bits of randomness per code: a fast hash is enough, a slow one buys nothing.
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).hexdigest()


def _is_recovery_code(code: str) -> bool:
    return "-" in code or len(code.strip()) == 12


class Accounts:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def add(self, name: str, role: Role, password: str) -> Enrolment:
        if not _NAME.match(name):
            raise UsageError(
                "A user name is 1–64 letters, digits, dots, dashes or underscores, "
                "starting with a letter or digit."
            )
        passwords.check_rules(password)
        secret = totp.new_secret()
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        try:
            cur = self._conn.execute(
                "INSERT INTO users (name, role, password_hash, totp_secret, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, role.value, passwords.hash_password(password), secret, time.time()),
            )
        except sqlcipher3.IntegrityError:
            raise UsageError(f"A user named '{name}' already exists.") from None
        user_id = cur.lastrowid
        self._conn.executemany(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
            [(user_id, _recovery_hash(c)) for c in codes],
        )
        user = User(user_id, name, role, False)
        return Enrolment(user, secret, totp.provisioning_uri(secret, name), codes)

    def authenticate(self, name: str, password: str, code: str) -> User:
        """Check password and second factor; raises :class:`AuthenticationFailed` on any failure."""
        row = self._conn.execute(
            "SELECT id, role, password_hash, totp_secret, totp_last_step, disabled "
            "FROM users WHERE name = ?",
            (name,),
        ).fetchone()
        ok = passwords.verify_password(row[2] if row else None, password)
        if not ok or row is None or row[5]:
            raise AuthenticationFailed(LOGIN_FAILED)
        user_id, role, _, secret, last_step, _ = row
        if _is_recovery_code(code):
            used = self._conn.execute(
                "UPDATE recovery_codes SET used_at = ? "
                "WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
                (time.time(), user_id, _recovery_hash(code)),
            ).rowcount
            if used != 1:
                raise AuthenticationFailed(LOGIN_FAILED)
        else:
            step = totp.matching_step(secret, code, last_step)
            if step is None:
                raise AuthenticationFailed(LOGIN_FAILED)
            self._conn.execute("UPDATE users SET totp_last_step = ? WHERE id = ?", (step, user_id))
        return User(user_id, name, Role(role), False)

    def get(self, user_id: int) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, role, disabled FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return User(row[0], row[1], Role(row[2]), bool(row[3])) if row else None

    def list(self) -> list[User]:
        rows = self._conn.execute("SELECT id, name, role, disabled FROM users ORDER BY name")
        return [User(r[0], r[1], Role(r[2]), bool(r[3])) for r in rows]

    def disable(self, name: str) -> User:
        cur = self._conn.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,))
        if cur.rowcount != 1:
            raise CustodianError(f"There is no user named '{name}'.")
        row = self._conn.execute("SELECT id, role FROM users WHERE name = ?", (name,)).fetchone()
        return User(row[0], name, Role(row[1]), True)
