"""Directory users at the door: the directory's word comes before the station's own checks at
login, and a live session is asked about again once the site's interval has passed.

A directory user has a row on each station they log in at (made at their first login there): it
holds the role the directory's groups gave, the station's authenticator for them (TOTP, enrolled
at that first login; none where the site's MFA server checks one-time codes over RADIUS) and, as the
verifier for offline logins, the Argon2id hash of the password the directory last accepted. The
station's lockout, sessions, step-up and audit trail work on that row as on a local account's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import AuthenticationFailed, CustodianError, NotAuthenticated
from app.security.accounts import LOGIN_FAILED, Origin
from app.security.card import CardCheck
from app.security.directory import DISABLED, NO_GROUP, Directory, DirectoryBook, DirectoryUnavailable
from app.security.radius import RadiusServer, RadiusUnavailable
from app.security.sessions import Session

if TYPE_CHECKING:
    from app.vault.gate import Access

RETRY = 30.0  # the most seconds before a directory that did not answer a re-check is tried again
UNTRUSTED_ALERT = "directory certificate not trusted"
CODE_REJECTED, MFA_SILENT = "one-time code refused by the MFA server", "the MFA server did not answer"
RADIUS_REFUSED = ("Login failed: your hospital's authenticator (RADIUS) did not accept that code; enter the "
                  "code it shows now (repeated failures lock the account for a while).")
_REFUSED = {DISABLED: "This account is disabled in the directory.",
            NO_GROUP: "Your directory account is in no group that gives access to Custodian; ask the site's "
                      "administrator."}


class DirectoryRefused(AuthenticationFailed):
    """The directory (or the site's MFA server: ``method`` radius; the card: ``method`` card) said
    no; ``why`` is for the audit trail (the message for the person)."""

    def __init__(self, message: str, why: str, method: str = "directory") -> None:
        super().__init__(message)
        self.why = why
        self.method = method


@dataclass(frozen=True)
class Admission:
    """A directory user let in: by the directory, or ``offline`` by the cached verifier's check
    that follows (the directory could not be reached). ``radius``: the site's MFA server, which
    checks the one-time code instead of the station's authenticator; ``card``: the site's card
    settings, when the user's card and its PIN do (:mod:`app.vault.card`)."""

    offline: bool
    radius: RadiusServer | None = None
    card: CardCheck | None = None

    @property
    def detail(self) -> dict[str, object]:
        method = "radius" if self.radius else "card" if self.card else "directory"
        return {"method": method, "offline": self.offline}


def admit(door: Access, name: str, password: str) -> Admission | None:
    """Before the station's own checks of ``name``: None for a local account (or no directory at
    this site); for a directory user, the directory checks the password and gives the role, which
    this station's row then holds. DirectoryRefused when it says no."""
    directory = door.directory()
    with door.store.reading():
        origin = door.accounts.origin(name)
    if origin is not None and not origin.directory:
        return None  # a local account: local administrators, sites without a directory
    if directory is None:
        if origin is None:
            return None
        raise DirectoryRefused(LOGIN_FAILED, "directory accounts are no longer set at this station")
    try:
        standing = directory.authenticate(name, password)
    except DirectoryUnavailable as exc:
        return Admission(_offline(door, name, origin, exc), _radius(door, directory), card_of(directory))
    except AuthenticationFailed as exc:
        raise DirectoryRefused(LOGIN_FAILED, str(exc)) from None
    why = standing.refusal or _another(origin.dn if origin else None, standing.dn) or ""
    if why or standing.role is None:
        with door.store.transaction():
            if origin is not None:
                _withdraw(door, door.accounts.named(name).id, name, why)
        raise DirectoryRefused(_REFUSED.get(why, LOGIN_FAILED), why)
    with door.store.transaction():
        door.accounts.admit(name, standing.dn, standing.role, password)
    card = card_of(directory)
    return Admission(False, _radius(door, directory), card and replace(card, upn=standing.upn))


def mfa_server(door: Access) -> RadiusServer | None:
    """The site's MFA server, where directory users' second factor is its one-time codes."""
    directory = door.directory()
    return _radius(door, directory) if directory else None


def card_of(directory: Directory) -> CardCheck | None:
    """The site's card settings, where directory users' second factor is a card."""
    config = directory.config
    return CardCheck(config.card_ca, config.crl) if config.second_factor == "card" else None


def _radius(door: Access, directory: Directory) -> RadiusServer | None:
    """The MFA server of ``directory``'s settings, with the shared secret kept at this station."""
    if directory.config.second_factor != "radius":
        return None
    with door.store.reading() as conn:
        return DirectoryBook(conn).radius(directory.config)


def mfa_accepts(door: Access, server: RadiusServer, name: str, code: str, **detail: object) -> bool:
    """The MFA server's word on ``name``'s one-time code. A server that does not answer refuses
    plainly: in the trail, but no wrong code, so it counts toward no lockout."""
    try:
        return server.check(name, code)
    except RadiusUnavailable:
        door.record(AuditEvent(EventType.LOGIN, Outcome.MINOR_FAILURE, user=name,
                               detail={"method": "radius", "why": MFA_SILENT, **detail}))
        raise


def one_time_code(door: Access, server: RadiusServer, name: str, password: str, code: str, *,
                  checked: bool) -> None:
    """Before the transaction of a login or unlock: the station's own refusals first (a locked or
    disabled account; the cached verifier unless the directory has just ``checked`` the password),
    so a locked account's codes never reach the MFA server; then the server's word. A rejected
    code is a wrong code (DirectoryRefused, counted toward the lockout by the caller)."""
    with door.store.reading():
        user = door.accounts.check_password(name, password, checked=checked)[0]
    if not mfa_accepts(door, server, user.name, code):  # (the account's own spelling of the name)
        raise DirectoryRefused(RADIUS_REFUSED, CODE_REJECTED, method="radius")


def _another(held: str | None, found: str) -> str | None:
    """Why not, when the name now finds another directory entry than the one this station's row is
    for (a name given again to someone else: the row's authenticator is the earlier person's)."""
    if held is None or held.lower() == found.lower():
        return None
    return ("the name is another directory entry's now; an administrator renames this station's earlier "
            "account of that name (custodian user rename)")


def _offline(door: Access, name: str, origin: Origin | None, exc: DirectoryUnavailable) -> bool:
    """The directory cannot be reached: the cached verifier may stand in for it within the site's
    window after the user's last login here (True: it may). A refusal is not a wrong password: it
    locks nothing."""
    if exc.untrusted:
        door.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE,
                               detail={"alert": UNTRUSTED_ALERT, "why": str(exc)}))
    days = door.policy.offline_login_days
    if origin is None or not origin.login_at or time.time() - origin.login_at > days * 86400:
        door.record(AuditEvent(EventType.LOGIN, Outcome.MINOR_FAILURE, user=name, detail={
            "method": "directory", "why": "directory unavailable; no offline login"}))
        raise CustodianError(f"{exc} Until it answers, only a user who logged in on this station in the "
                             f"last {days} days can log in." if days else
                             f"{exc} This site allows no logins without the directory.")
    return True


def _withdraw(door: Access, user_id: int, name: str, why: str) -> str:
    """In the caller's transaction: the directory no longer lets the user in, so their sessions end
    and no offline login is left; what those sessions are told."""
    told = f"Your directory account no longer gives access ({why}): the session has ended."
    door.accounts.refused(user_id)
    door.sessions.end_user(user_id, told)
    door.record(AuditEvent(EventType.USER_CHANGE, user=name,
                           detail={"directory": why, "sessions_ended": True}))
    return told


class Recheck:
    """Live sessions of directory users, asked about again once the site's interval has passed
    since the directory last confirmed the user: a user it disabled, removed or took out of every
    mapped group loses them at that next access. One check at a time; while the directory does not
    answer the sessions go on (an offline one stays marked), and it is tried again after the
    interval or :data:`RETRY` seconds, whichever is shorter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._retry_at = 0.0

    def __call__(self, door: Access, live: Session) -> Session:
        user = live.user
        if not user.directory or time.time() < self._retry_at:
            return live
        with door.store.reading():
            dn, checked = door.accounts.directory_state(user)
        due = time.time() - checked >= door.policy.directory_recheck_seconds
        if not due or not self._lock.acquire(blocking=False):
            return live
        try:
            directory = door.directory()
            standing = directory.lookup(user.name) if directory else None
        except DirectoryUnavailable:
            self._retry_at = time.time() + min(RETRY, door.policy.directory_recheck_seconds)
            return live
        finally:
            self._lock.release()
        why = ("directory accounts are no longer set at this station" if directory is None else
               "no longer found in the directory" if standing is None else
               standing.refusal or _another(dn, standing.dn))
        with door.store.transaction():
            if why or standing is None or standing.role is None:
                told = _withdraw(door, user.id, user.name, why or "")
            else:
                door.accounts.confirmed(user, standing.role)
                if standing.role is not user.role:
                    door.record(AuditEvent(EventType.USER_CHANGE, user=user.name,
                                           detail={"directory_role": standing.role.value}))
                if door.sessions.online(user.id):
                    door.record(AuditEvent(EventType.LOGIN, user=user.name,
                                           detail={"method": "directory", "back_online": True}))
                return replace(live, user=replace(user, role=standing.role), offline=False)
        raise NotAuthenticated(told)
