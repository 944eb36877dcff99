"""User accounts: Argon2id password hashes, TOTP secrets, one-time recovery codes, lockout.

All of it lives in the encrypted index. Every failed login gets the same message whether the
user is unknown, the password wrong, the code wrong or the account locked, so the message
reveals nothing; the audit trail records which it was. A user name is one name whatever its case
(``rad`` logs in as ``Rad``), and the account's own spelling is what the trail records.

Two lockouts: wrong passwords or codes at the login or lock screen, which anyone may type for any
name, lock the account for new logins only; wrong codes or passwords inside a live session (step-up,
password change), typed by whoever holds it, lock it altogether and end its sessions. A one-time
recovery code with the right password logs in through either, so nobody can keep an account (the
only administrator's included) locked out, and it guesses nothing: a code is 59 random bits.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import sqlcipher3

from app.errors import AuthenticationFailed, CustodianError, UsageError
from app.security import passwords, totp
from app.security.policy import SitePolicy
from app.security.roles import Role
from app.security.users import User, check_name

LOGIN_FAILED = ("Login failed: the user name, password or code is not correct "
                "(repeated failures lock the account for a while).")
STEP_UP_FAILED = "The authenticator code is not correct."
# A wrong step-up code is answered only after this delay, doubled for each wrong code in a row up to
# the most; the lockout bounds how many codes one session can try, the delay how fast.
STEP_UP_DELAY = 0.5
STEP_UP_DELAY_MOST = 8.0
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True)
class Origin:
    """Where the account of a name comes from, as this station knows it: a directory user's row
    (its entry's DN; else a local account), and when the directory last checked its password here
    (the offline window runs from then; 0: not since it refused them)."""

    dn: str | None
    login_at: float

    @property
    def directory(self) -> bool:
        return self.dn is not None


_USER = "id, name, role, disabled, enrolled, directory_dn IS NOT NULL"


def _user(row: tuple[Any, ...]) -> User:
    return User(row[0], row[1], Role(row[2]), bool(row[3]), bool(row[4]), bool(row[5]))


@dataclass(frozen=True)
class Enrolment:
    """What the owner of a new or re-enrolled account needs once: TOTP secret and recovery codes.

    Until it is confirmed with a code from the authenticator it exists in memory only.
    """

    user: User
    totp_secret: str
    totp_uri: str
    recovery_codes: list[str]


@dataclass(frozen=True)
class Verified:
    """A successful first factor and second factor; ``recovery`` when a recovery code was used,
    ``through_lock`` when it let the owner in while the account was locked."""

    user: User
    recovery: bool
    through_lock: bool = False


@dataclass(frozen=True)
class Failure:
    """A failed password or code counted against an account: the account as stored, and whether
    this failure locked it."""

    user_id: int
    name: str
    locked: bool


# (failures in a row, locked until) for the login screen's failures, and for those inside a session.
_COUNTERS = {False: ("login_failures", "login_locked_until"), True: ("failed_count", "locked_until")}


def locked_out(cause: str, seconds: float) -> str:
    """Why a locked account's session ended: ``cause`` names the failures ("codes", "logins")."""
    minutes = max(1, round(seconds / 60))
    return (f"This account is locked after repeated failed {cause}: the session has ended; log in "
            f"again after {minutes} minute{'' if minutes == 1 else 's'}.")


def step_up_delay(failures: int) -> float:
    """Seconds before the next step-up code after ``failures`` wrong ones in a row."""
    return min(STEP_UP_DELAY * 2 ** (failures - 1), STEP_UP_DELAY_MOST) if failures > 0 else 0.0


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

    # ------------------------------------------------------------------ administration
    def add(self, name: str, role: Role, password: str, full_name: str = "") -> Enrolment:
        check_name(name)
        full_name = " ".join(full_name.split())
        if len(full_name) > 128 or not full_name.isprintable():
            raise UsageError("A full name is up to 128 printable characters.")
        passwords.check_rules(password, name)
        try:
            cur = self._conn.execute(
                "INSERT INTO users (name, role, password_hash, totp_secret, created_at, full_name) "
                "VALUES (?, ?, ?, '', ?, ?)",
                (name, role.value, passwords.hash_password(password), time.time(), full_name),
            )
        except sqlcipher3.IntegrityError:
            raise self._taken(name) from None
        user = User(cur.lastrowid, name, role, False, enrolled=False)
        enrolment = self.new_enrolment(user)
        self.confirm_enrolment(enrolment, code=None)
        return enrolment

    def get(self, user_id: int) -> User | None:
        row = self._conn.execute(f"SELECT {_USER} FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def list(self) -> list[User]:
        rows = self._conn.execute(f"SELECT {_USER} FROM users ORDER BY name COLLATE NOCASE")
        return [_user(r) for r in rows]

    def named(self, name: str) -> User:
        """The account of ``name`` in any case; CustodianError when there is none."""
        row = self._conn.execute(f"SELECT {_USER} FROM users WHERE name = ? COLLATE NOCASE",
                                 (name,)).fetchone()
        if row is None:
            raise CustodianError(f"There is no user named '{name}'.")
        return _user(row)

    def disable(self, name: str) -> User:
        user = self.named(name)
        self._conn.execute("UPDATE users SET disabled = 1 WHERE id = ?", (user.id,))
        return replace(user, disabled=True)

    def rename(self, name: str, new_name: str) -> tuple[User, str]:
        """The account of ``name`` under ``new_name`` (a change of case alone included), and the
        name it had. Its sessions, grants and trail stay its own (they hold its id)."""
        check_name(new_name)
        user = self.named(name)
        try:
            self._conn.execute("UPDATE users SET name = ? WHERE id = ?", (new_name, user.id))
        except sqlcipher3.IntegrityError:
            raise self._taken(new_name) from None
        return replace(user, name=new_name), user.name

    def _taken(self, name: str) -> UsageError:
        held = self.named(name).name
        return UsageError(f"A user named '{held}' already exists" + (
            "." if held == name else " (user names are the same whatever their case)."))

    def set_inactivity(self, user: User, seconds: int | None) -> None:
        """The user's own lock time (None: the site's)."""
        self._conn.execute("UPDATE users SET inactivity_seconds = ? WHERE id = ?", (seconds, user.id))

    def set_password(self, user: User, password: str) -> None:
        passwords.check_rules(password, user.name)
        self._conn.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                           (passwords.hash_password(password), user.id))

    # ------------------------------------------------------------------ directory users
    def origin(self, name: str) -> Origin | None:
        """Where the account of ``name`` comes from; None when this station has no row for it."""
        row = self._conn.execute(
            "SELECT directory_dn, directory_login_at FROM users WHERE name = ? COLLATE NOCASE",
            (name,)).fetchone()
        return Origin(row[0], row[1]) if row else None

    def admit(self, name: str, dn: str, role: Role, password: str) -> None:
        """A directory user the directory just let in: this station's row for them (made at their
        first login here) takes the role and, as the offline verifier, the password's Argon2id hash."""
        check_name(name)
        now = time.time()
        values = (role.value, passwords.hash_password(password), dn, now, now)
        updated = self._conn.execute(
            "UPDATE users SET role = ?, password_hash = ?, directory_dn = ?, directory_checked_at = ?, "
            "directory_login_at = ? WHERE name = ? COLLATE NOCASE AND directory_dn IS NOT NULL",
            (*values, name)).rowcount
        if not updated:
            self._conn.execute(
                "INSERT INTO users (role, password_hash, directory_dn, directory_checked_at, "
                "directory_login_at, name, totp_secret, created_at) VALUES (?, ?, ?, ?, ?, ?, '', ?)",
                (*values, name, now))

    def directory_state(self, user: User) -> tuple[str, float]:
        """A directory user's entry DN, and when the directory last confirmed them."""
        row = self._conn.execute("SELECT directory_dn, directory_checked_at FROM users WHERE id = ?",
                                 (user.id,)).fetchone()
        return (row[0] or "", row[1]) if row else ("", 0.0)

    def confirmed(self, user: User, role: Role) -> None:
        """The directory still lets ``user`` in, as ``role``."""
        self._conn.execute("UPDATE users SET role = ?, directory_checked_at = ? WHERE id = ?",
                           (role.value, time.time(), user.id))

    def refused(self, user_id: int) -> None:
        """The directory no longer lets the user in: no offline login until it does again."""
        self._conn.execute("UPDATE users SET directory_login_at = 0 WHERE id = ?", (user_id,))

    # ------------------------------------------------------------------ enrolment
    @staticmethod
    def new_enrolment(user: User) -> Enrolment:
        secret = totp.new_secret()
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        return Enrolment(user, secret, totp.provisioning_uri(secret, user.name), codes)

    def confirm_enrolment(self, enrolment: Enrolment, code: str | None) -> None:
        """Store a new secret and recovery codes; with ``code``, only if the authenticator agrees.

        Confirming with a code marks the account enrolled and spends that code's time step.
        """
        step = 0
        if code is not None:
            step = totp.matching_step(enrolment.totp_secret, code, 0) or 0
            if not step:
                raise AuthenticationFailed("That code does not match the new authenticator entry; "
                                           "check the phone's clock and try the next code.")
        self._conn.execute(
            "UPDATE users SET totp_secret = ?, totp_last_step = ?, enrolled = ? WHERE id = ?",
            (enrolment.totp_secret, step, 1 if code is not None else 0, enrolment.user.id))
        self._conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (enrolment.user.id,))
        self._conn.executemany(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
            [(enrolment.user.id, _recovery_hash(c)) for c in enrolment.recovery_codes],
        )

    # ------------------------------------------------------------------ authentication
    def check_password(self, name: str, password: str, *, through_lock: bool = False,
                       checked: bool = False) -> tuple[User, bool]:
        """First factor only; a locked account is refused unless ``through_lock`` (a recovery code
        follows, or the caller holds a live session). ``checked``: the directory has just checked
        the password (no second Argon2id run). The account (its name as stored) and whether it is
        locked; raises :class:`AuthenticationFailed`."""
        row = self._conn.execute(
            f"SELECT {_USER}, password_hash, max(locked_until, login_locked_until) "
            "FROM users WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
        ok = (checked and row is not None and row[5]) or passwords.verify_password(row[6] if row else None,
                                                                                    password)
        locked = bool(row and row[7] > time.time())
        if row is None or row[3] or (locked and not through_lock) or not ok:
            raise AuthenticationFailed(LOGIN_FAILED)
        return _user(row), locked

    def authenticate(self, name: str, password: str, code: str, *, checked: bool = False) -> Verified:
        """Password (unless the directory has just ``checked`` it) and second factor (TOTP, or a
        one-time recovery code, which also lets its owner in through a lock and lifts the one inside
        sessions: the sessions it ended are gone)."""
        recovery = _is_recovery_code(code)
        user, locked = self.check_password(name, password, through_lock=recovery, checked=checked)
        if recovery:
            used = self._conn.execute(
                "UPDATE recovery_codes SET used_at = ? "
                "WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
                (time.time(), user.id, _recovery_hash(code)),
            ).rowcount
            if used != 1:
                raise AuthenticationFailed(LOGIN_FAILED)
            self._conn.execute("UPDATE users SET locked_until = 0 WHERE id = ?", (user.id,))
            self.clear_failures(user)
            return Verified(user, recovery=True, through_lock=locked)
        self.check_code(user, code, LOGIN_FAILED)
        self._conn.execute("UPDATE users SET enrolled = 1 WHERE id = ?", (user.id,))
        self.clear_failures(user)
        return Verified(user, recovery=False)

    def check_code(self, user: User, code: str, failure: str) -> None:
        """A current TOTP code, never one already used (replay); spends its time step."""
        secret, last_step = self._conn.execute(
            "SELECT totp_secret, totp_last_step FROM users WHERE id = ?", (user.id,)).fetchone()
        step = totp.matching_step(secret, code, last_step) if secret else None
        if step is None:
            raise AuthenticationFailed(failure)
        self._conn.execute("UPDATE users SET totp_last_step = ? WHERE id = ?", (step, user.id))

    def holds(self, user: User) -> tuple[float, float]:
        """(seconds the account stays locked, seconds before its next step-up code may be tried)."""
        row = self._conn.execute("SELECT locked_until, step_up_after FROM users WHERE id = ?",
                                 (user.id,)).fetchone()
        now = time.time()
        return (max(0.0, row[0] - now), max(0.0, row[1] - now)) if row else (0.0, 0.0)

    def hold_step_ups(self, user: User) -> float:
        """After a wrong step-up code: hold the account's next one back; returns for how long."""
        row = self._conn.execute("SELECT failed_count FROM users WHERE id = ?", (user.id,)).fetchone()
        delay = step_up_delay(row[0] if row else 1)
        self._conn.execute("UPDATE users SET step_up_after = ? WHERE id = ?", (time.time() + delay, user.id))
        return delay

    def clear_failures(self, user: User, *, in_session: bool = False) -> None:
        """A correct password and code (all failures in a row start again from none), or a correct
        step-up code (``in_session``: those inside sessions do; the login screen's are not its)."""
        logins = "" if in_session else ", login_failures = 0"
        self._conn.execute(f"UPDATE users SET failed_count = 0, step_up_after = 0{logins} WHERE id = ?",
                           (user.id,))

    def record_failure(self, name: str, policy: SitePolicy, *, in_session: bool = False) -> Failure | None:
        """Count a failed attempt at the login screen, or ``in_session`` (each toward its own lock);
        None for a name no account has."""
        count, until = _COUNTERS[in_session]
        row = self._conn.execute(f"SELECT id, name, {count} FROM users WHERE name = ? COLLATE NOCASE",
                                 (name,)).fetchone()
        if row is None:
            return None
        failures = row[2] + 1
        if failures >= policy.lockout_failures:
            self._conn.execute(f"UPDATE users SET {count} = 0, {until} = ? WHERE id = ?",
                               (time.time() + policy.lockout_seconds, row[0]))
            return Failure(row[0], row[1], locked=True)
        self._conn.execute(f"UPDATE users SET {count} = ? WHERE id = ?", (failures, row[0]))
        return Failure(row[0], row[1], locked=False)
