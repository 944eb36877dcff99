"""Sessions: a random token whose hash is kept in the index with idle and absolute deadlines.

The vault checks a session against the index on every PHI access, so logging out, timing out,
disabling the account or its lockout ends access at once, in every process using the vault (an
ended session's next call is told why, when a reason was recorded). The idle limit
is the site's, or the user's own when that is shorter.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING

from app.errors import NotAuthenticated
from app.security.users import Session, User

if TYPE_CHECKING:
    import sqlcipher3

    from app.security.accounts import Accounts
    from app.security.policy import SitePolicy

# Activity is written at most this often, so scrolling through images costs no disk writes.
TOUCH_INTERVAL = 5.0
# The clock may step back this much (NTP corrections) without locking a session; more, and the idle
# time could not be told, so the session is refused rather than kept open for as long as it went back.
CLOCK_STEP_BACK = 120.0
ENDED = "The session has ended: log in again."
ANOTHER_ACCOUNT = "This session belongs to another OS account: log in again."


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A service client's OS account: a Unix uid (SO_PEERCRED) or a Windows SID (the pipe client's token).
PeerId = int | str


class Sessions:
    def __init__(self, conn: sqlcipher3.Connection, accounts: Accounts, policy: SitePolicy) -> None:
        self._conn = conn
        self._accounts = accounts
        self.policy = policy

    def open(self, user: User, *, needs_enrolment: bool = False, peer_uid: PeerId | None = None,
             offline: bool = False) -> tuple[str, Session]:
        """A new session; ``peer_uid``: the OS account of the service client that logged in, the
        only one that may use it (embedded mode: None, the session file is bound instead)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + self.policy.absolute_seconds
        self._conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen, expires_at, "
            "needs_enrolment, peer_uid, offline) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_hash(token), user.id, now, now, expires, int(needs_enrolment), peer_uid, int(offline)),
        )
        return token, Session(_hash(token), user, expires, needs_enrolment, offline)

    def resume(self, token: str, peer_uid: PeerId | None = None) -> Session:
        """The live session of ``token``, if the OS account asking is the one it is bound to."""
        self._bound(token, peer_uid)
        return self._live(_hash(token), touch=True)

    def held(self, token: str, peer_uid: PeerId | None = None) -> Session:
        """The session of ``token`` whether idle or not (its lock screen; a service call, whose
        liveness the gate checks): bound as for resume, and refused as :meth:`revivable` refuses."""
        row = self._conn.execute(
            "SELECT user_id, expires_at, needs_enrolment, peer_uid, ended_at, ended_reason, offline "
            "FROM sessions WHERE token_hash = ?", (_hash(token),)).fetchone()
        if row is None:
            raise NotAuthenticated("Not logged in.")
        user_id, expires_at, needs_enrolment, bound, ended_at, reason, offline = row
        if bound != peer_uid:
            raise NotAuthenticated(ANOTHER_ACCOUNT)
        user = self._accounts.get(user_id)
        if ended_at is not None or time.time() >= expires_at or user is None or user.disabled:
            raise NotAuthenticated(reason or ENDED)
        return Session(_hash(token), user, expires_at, bool(needs_enrolment), bool(offline))

    def _bound(self, token: str, peer_uid: PeerId | None) -> None:
        row = self._conn.execute("SELECT peer_uid FROM sessions WHERE token_hash = ?",
                                 (_hash(token),)).fetchone()
        if row is not None and row[0] != peer_uid:
            raise NotAuthenticated(ANOTHER_ACCOUNT)

    def check(self, session: Session) -> Session:
        return self._live(session.token_hash, touch=True)

    def inactivity_limit(self, user: User) -> float:
        row = self._conn.execute("SELECT inactivity_seconds FROM users WHERE id = ?", (user.id,)).fetchone()
        own = row[0] if row and row[0] else None
        return min(self.policy.inactivity_seconds, own or self.policy.inactivity_seconds)

    def revivable(self, session: Session) -> None:
        """Ended sessions, disabled accounts and the absolute limit cannot be unlocked."""
        row = self._conn.execute("SELECT ended_at, expires_at, ended_reason FROM sessions "
                                 "WHERE token_hash = ?", (session.token_hash,)).fetchone()
        user = self._accounts.get(session.user.id)
        if row is None or row[0] is not None or time.time() >= row[1] or user is None or user.disabled:
            raise NotAuthenticated((row[2] if row else None) or ENDED)

    def revive(self, session: Session) -> Session:
        """After the user proved it is still them (lock screen): idle time starts again."""
        self.revivable(session)
        self._conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                           (time.time(), session.token_hash))
        return self._live(session.token_hash, touch=False)

    def enrolled(self, session: Session) -> Session:
        self._conn.execute("UPDATE sessions SET needs_enrolment = 0 WHERE token_hash = ?",
                           (session.token_hash,))
        return self._live(session.token_hash, touch=True)

    def online(self, user_id: int) -> int:
        """The directory answered again and still lets the user in: how many of their sessions
        were offline."""
        return int(self._conn.execute("UPDATE sessions SET offline = 0 WHERE user_id = ? AND offline = 1",
                                      (user_id,)).rowcount)

    def end(self, session: Session) -> None:
        self._conn.execute(
            "UPDATE sessions SET ended_at = ? WHERE token_hash = ? AND ended_at IS NULL",
            (time.time(), session.token_hash),
        )

    def end_user(self, user_id: int, reason: str | None = None) -> None:
        """End every live session of the account; ``reason``: what their next call is told."""
        self._conn.execute(
            "UPDATE sessions SET ended_at = ?, ended_reason = ? WHERE user_id = ? AND ended_at IS NULL",
            (time.time(), reason, user_id),
        )

    def _live(self, token_hash: str, *, touch: bool) -> Session:
        """The session if it is live; records activity (throttled) when ``touch``."""
        row = self._conn.execute(
            "SELECT user_id, last_seen, expires_at, ended_at, needs_enrolment, ended_reason, offline "
            "FROM sessions WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
        if row is None or row[3] is not None:
            raise NotAuthenticated((row[5] if row else None) or "Not logged in.")
        user_id, last_seen, expires_at, _, needs_enrolment, _, offline = row
        now = time.time()
        if now >= expires_at:
            raise NotAuthenticated("The session reached its time limit: log in again.")
        user = self._accounts.get(user_id)
        if user is None or user.disabled:
            raise NotAuthenticated("This account is disabled.")
        if now - last_seen < -CLOCK_STEP_BACK:  # (set right again, the real idle time decides)
            raise NotAuthenticated("The session was locked because the system clock went back: log in again.")
        if now - last_seen >= self.inactivity_limit(user):
            raise NotAuthenticated("The session was locked after inactivity: log in again.")
        if touch and now - last_seen >= TOUCH_INTERVAL:
            self._conn.execute(
                "UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, token_hash)
            )
        return Session(token_hash, user, expires_at, bool(needs_enrolment), bool(offline))
