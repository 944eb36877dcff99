"""Signing in and one's own account: login, enrolment, unlock, step-up, password, lock time."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import (
    AuthenticationFailed,
    AuthenticatorNotSetUp,
    CustodianError,
    NotAuthenticated,
    NotPermitted,
    UsageError,
)
from app.security.accounts import LOGIN_FAILED, STEP_UP_FAILED, Enrolment, User, Verified, locked_out
from app.security.sessions import PeerId, Session
from app.vault.card import card_holder, card_refusal, site_card
from app.vault.directory import Admission, DirectoryRefused, admit, mfa_accepts, mfa_server, one_time_code
from app.vault.gate import Access, Service, opening, signed_in


class AccountService(Service):
    @opening
    def login(self, door: Access, name: str, password: str, code: str, peer_uid: PeerId | None = None
              ) -> tuple[str, Session]:
        """Password and authenticator code (or a recovery code, which forces re-enrolment).
        ``peer_uid``: in service mode, the client's OS account, which alone may use the session.
        A directory user's password and role are the directory's first (:func:`admit`), and where
        the site has an MFA server, the one-time code is its (:func:`one_time_code`); where its
        second factor is a card, ``code`` is the card's PIN (:func:`card_holder`)."""
        try:
            admitted = admit(door, name, password)
            if admitted and admitted.radius:
                one_time_code(door, admitted.radius, name, password, code, checked=not admitted.offline)
            if admitted and admitted.card:
                card_holder(door, admitted.card, name, password, code, checked=not admitted.offline)
            with door.store.transaction():
                offline = bool(admitted and admitted.offline)
                if admitted and (admitted.radius or admitted.card):
                    verified = _code_accepted(door, name)
                elif admitted and not door.accounts.named(name).enrolled:
                    raise AuthenticatorNotSetUp("This station has no authenticator of yours yet: set one up "
                                                "with First login in the workstation window.")
                else:
                    verified = door.accounts.authenticate(name, password, code, checked=bool(admitted and
                                                                                              not offline))
                token, session = door.sessions.open(verified.user, needs_enrolment=verified.recovery,
                                                    peer_uid=peer_uid, offline=offline)
                door.record(AuditEvent(EventType.LOGIN, user=verified.user.name, detail={
                    "recovery_code": verified.recovery, **_method(admitted),
                    **({"through_lock": True} if verified.through_lock else {})}))
        except AuthenticationFailed as exc:
            _failed(door, name, **_refused(exc))
            raise
        return token, session

    @opening
    def begin_first_enrolment(self, door: Access, name: str, password: str) -> Enrolment:
        """First login of a new account: a fresh authenticator secret, not yet stored."""
        try:
            admitted = admit(door, name, password)
            if admitted and admitted.radius:
                raise CustodianError("Your one-time codes come from the site's MFA server: log in with your "
                                     "password and a code; no authenticator is set up at this station.")
            if admitted and admitted.card:
                raise CustodianError("Your second factor is your card: log in with your password and the "
                                     "card's PIN; no authenticator is set up at this station.")
            if admitted and admitted.offline:
                raise CustodianError("An authenticator is set up only while the directory answers: "
                                     "try again when it is back.")
            with door.store.reading():
                user = door.accounts.check_password(name, password, checked=admitted is not None)[0]
        except AuthenticationFailed as exc:
            _failed(door, name, enrolment=True, **_refused(exc))
            raise
        if user.enrolled:
            raise CustodianError("This account already has an authenticator: log in with its code.")
        return door.accounts.new_enrolment(user)

    @opening
    def finish_first_enrolment(self, door: Access, enrolment: Enrolment, code: str,
                               peer_uid: PeerId | None = None) -> tuple[str, Session]:
        with door.store.transaction():
            user = door.accounts.get(enrolment.user.id)
            if user is None or user.disabled or user.enrolled:
                raise AuthenticationFailed(LOGIN_FAILED)
            door.accounts.confirm_enrolment(enrolment, code)
            token, session = door.sessions.open(replace(user, enrolled=True), peer_uid=peer_uid)
            door.record(AuditEvent(EventType.ENROLMENT, user=user.name, detail={"first": True}))
            door.record(AuditEvent(EventType.LOGIN, user=user.name,
                                   detail=_method(Admission(offline=False) if user.directory else None)))
        return token, session

    @signed_in
    def begin_reenrolment(self, door: Access) -> Enrolment:
        """A new authenticator secret and recovery codes for the session's own user."""
        return door.accounts.new_enrolment(door.signed_in)

    @signed_in
    def finish_reenrolment(self, door: Access, enrolment: Enrolment, code: str) -> Session:
        assert door.session is not None  # (signed_in hands the live session)
        with door.store.transaction():
            if enrolment.user.id != door.signed_in.id:
                raise NotPermitted("An authenticator can only be set up for your own account.")
            door.accounts.confirm_enrolment(enrolment, code)
            session = door.sessions.enrolled(door.session)
            door.record(AuditEvent(EventType.ENROLMENT, user=door.actor, detail={"first": False}))
        return session

    @signed_in
    def change_password(self, door: Access, old: str, new: str) -> None:
        """The current password is checked as a step-up code is: inside the session, so a wrong
        one counts toward the lock that ends the account's sessions (whoever holds this one)."""
        user = door.signed_in
        if user.directory:
            raise UsageError("A directory account's password is changed in the directory, not here.")
        try:
            with door.store.transaction():
                door.accounts.check_password(user.name, old, through_lock=True)
                door.accounts.set_password(user, new)
                door.record(AuditEvent(EventType.USER_CHANGE, user=user.name,
                                       detail={"password_changed": user.name}))
        except AuthenticationFailed:
            ended = _failed(door, user.name, "password change", password_change=True)
            if ended:
                raise NotAuthenticated(ended) from None
            raise AuthenticationFailed("The current password is not correct.") from None

    @opening
    def unlock(self, door: Access, session: Session, password: str, code: str) -> Session:
        """The lock screen: the same user proves it is them and the session goes on as it was."""
        name = session.user.name
        with door.store.reading():
            door.sessions.revivable(session)  # an ended session needs a new login, not an unlock
        server = mfa_server(door) if session.user.directory else None
        card = site_card(door) if session.user.directory else None
        try:
            if server:
                one_time_code(door, server, name, password, code, checked=False)
            if card:
                card_holder(door, card, name, password, code, checked=False)
            with door.store.transaction():
                verified = (_code_accepted(door, name) if server or card else
                            door.accounts.authenticate(name, password, code))
                if verified.user.id != session.user.id:
                    raise AuthenticationFailed(LOGIN_FAILED)
                live = door.sessions.revive(session)
                method = {"method": "radius"} if server else {"method": "card"} if card else {}
                door.record(AuditEvent(EventType.LOGIN, user=verified.user.name,
                                       detail={"unlock": True, **method}))
        except AuthenticationFailed as exc:
            _failed(door, name, unlock=True, **_refused(exc))
            raise
        return live

    @signed_in
    def step_up(self, door: Access, code: str) -> None:
        """Re-authentication with the authenticator before export and break-glass.

        A wrong code counts toward the account's lock inside sessions, and is answered only after a
        delay that doubles with each wrong code in a row; a code tried while that delay runs is
        refused unchecked. The failure that locks the account ends its sessions, this one
        included; while that lock holds, a step-up is refused whatever the code. (A lock by wrong
        passwords at the login screen leaves live sessions and their step-ups alone.) Where the
        site's MFA server checks a directory user's codes, it is asked first, unless a lock or
        delay holds (then the code is refused unchecked, and never reaches it); where the site's
        second factor is a card, ``code`` is its PIN and the card is asked the same way.
        """
        user = door.signed_in
        server = mfa_server(door) if user.directory else None
        card = site_card(door) if user.directory else None
        accepted, wrong = None, ""
        if server or card:
            with door.store.reading():
                held = any(door.accounts.holds(user))
            if server:
                accepted = not held and mfa_accepts(door, server, user.name, code, step_up=True)
            elif card:
                refused = None if held else card_refusal(door, card, user.name, code, step_up=True)
                accepted, wrong = not held and refused is None, str(refused or "")
        with door.store.transaction():  # one transaction: parallel tries cannot slip between
            refusal, delay = _step_up(door, user, code, accepted, "card" if card else "radius", wrong)
        if delay:
            time.sleep(delay)  # (the index is not held meanwhile)
        if refusal is not None:
            raise refusal

    @opening
    def held(self, door: Access, token: str, peer_uid: PeerId | None = None) -> Session:
        """The session of ``token`` as it stands, live or locked after inactivity (for the lock
        screen of a service client, which holds only the token, and for the service's calls, which
        pass the gate's own check); ended ones are refused, and the refusal is in the trail."""
        try:
            with door.store.reading():
                session = door.sessions.held(token, peer_uid)
        except NotAuthenticated as exc:
            door.refuse(str(exc))
            raise
        return session

    @opening
    def resume(self, door: Access, token: str | None, peer_uid: PeerId | None = None) -> Session:
        try:
            if not token:
                raise NotAuthenticated("Not logged in.")
            with door.store.transaction():
                return door.sessions.resume(token, peer_uid)
        except NotAuthenticated as exc:
            door.refuse(str(exc))
            raise

    @opening
    def logout(self, door: Access, session: Session) -> None:
        with door.store.transaction():
            door.sessions.end(session)
            door.record(AuditEvent(EventType.LOGOUT, user=session.user.name))

    @signed_in
    def whoami(self, door: Access) -> Session:
        assert door.session is not None
        return door.session

    @opening
    def inactivity_limit(self, door: Access, user: User) -> float:
        """Seconds of inactivity after which this user's screen locks (site or own, the shorter)."""
        with door.store.reading():
            return door.sessions.inactivity_limit(user)

    @opening
    def second_factor(self, door: Access) -> str:
        """The second factor of this site's directory users (``totp`` where no directory is set),
        so the login screen says where their code comes from."""
        directory = door.directory()
        return directory.config.second_factor if directory else "totp"

    @signed_in
    def set_own_inactivity(self, door: Access, seconds: int | None) -> float:
        """A user may lock sooner than the site requires, never later."""
        limit = door.policy.inactivity_seconds
        if seconds is not None and not 30 <= seconds <= limit:
            raise UsageError(f"Choose from 30 to {limit} seconds (the site's limit).")
        with door.store.transaction():
            door.accounts.set_inactivity(door.signed_in, seconds)
            return door.sessions.inactivity_limit(door.signed_in)

    # The CLI keeps its session token between commands in a sealed file (see StoreCore.save_token).
    @opening
    def save_token(self, door: Access, token: str) -> None:
        door.store.save_token(token)

    @opening
    def load_token(self, door: Access) -> str | None:
        return door.store.load_token()

    @opening
    def clear_token(self, door: Access) -> None:
        door.store.clear_token()


def _step_up(door: Access, user: User, code: str, accepted: bool | None, method: str = "radius",
             wrong: str = "") -> tuple[CustodianError | None, float]:
    """One step-up in the caller's transaction: the refusal to raise once that has committed (so
    its record stays in the trail), and how long to wait before raising it. ``accepted``: the word
    of the MFA server or the card (``method``; ``wrong``: its refusal) on the code (None: the
    station's authenticator checks it)."""
    locked, wait = door.accounts.holds(user)
    if locked:
        why = locked_out("logins or codes", locked)
        door.sessions.end_user(user.id, why)
        door.refuse("step-up on a locked account")
        return NotAuthenticated(why), 0.0
    if wait:
        door.refuse("step-up code tried during the delay after a wrong one")
        seconds = math.ceil(wait)
        return AuthenticationFailed(f"A wrong code was entered a moment ago: wait {seconds} "
                                    f"second{'' if seconds == 1 else 's'}, then enter the next code."), 0.0
    try:
        if accepted is None:
            door.accounts.check_code(user, code, STEP_UP_FAILED)
        elif not accepted:
            raise AuthenticationFailed(wrong or "The one-time code is not correct.")
    except AuthenticationFailed as exc:
        ended = _count_failure(door, user.name, "step-up", step_up=True,
                               **({} if accepted is None else {"method": method}))
        return (NotAuthenticated(ended), 0.0) if ended else (exc, door.accounts.hold_step_ups(user))
    door.accounts.clear_failures(user, in_session=True)
    door.record(AuditEvent(EventType.LOGIN, user=user.name, detail={
        "step_up": True, **({} if accepted is None else {"method": method})}))
    return None, 0.0


def _code_accepted(door: Access, name: str) -> Verified:
    """In the caller's transaction, once the MFA server has accepted the code and the password has
    been checked (:func:`one_time_code`): the account as it stands now (a lock or a disabling that
    came meanwhile still refuses)."""
    user = door.accounts.check_password(name, "", checked=True)[0]
    door.accounts.clear_failures(user)
    return Verified(user, recovery=False)


def _method(admitted: Admission | None) -> dict[str, object]:
    """How a login was checked, for its audit event."""
    return admitted.detail if admitted else {"method": "local"}


def _refused(exc: AuthenticationFailed) -> dict[str, Any]:
    """What the directory (or the MFA server) said of a failed login, for its audit event."""
    return {"method": exc.method, "why": exc.why} if isinstance(exc, DirectoryRefused) else {}


def _failed(door: Access, name: str, kind: str = "login", **detail: object) -> str | None:
    """A failed password or code in a transaction of its own (see :func:`_count_failure`)."""
    with door.store.transaction():
        return _count_failure(door, name, kind, **detail)


# What the failures of each kind inside a live session are, in the reason its sessions are told.
_IN_SESSION = {"step-up": "codes", "password change": "passwords"}


def _count_failure(door: Access, name: str, kind: str, **detail: object) -> str | None:
    """A failed password or code, in the caller's transaction: counted toward the account's lock
    and in the trail, under the account's own name. The failure that locks it is alerted.

    A ``kind`` of :data:`_IN_SESSION` was typed inside a live session, by whoever holds it: its lock
    ends the account's sessions at once, and this returns what they are told. A "login" failure
    (login, lock screen, first enrolment) may be anyone's typing any name: its lock refuses new
    logins only, and live sessions go on, or a stranger could end a radiologist's reading.
    """
    in_session = kind in _IN_SESSION
    failure = door.accounts.record_failure(name, door.policy, in_session=in_session)
    door.record(AuditEvent(EventType.LOGIN, Outcome.MINOR_FAILURE, user=failure.name if failure else name,
                           detail=detail))
    if failure is None or not failure.locked:
        return None
    why = locked_out(_IN_SESSION[kind], door.policy.lockout_seconds) if in_session else None
    if why:
        door.sessions.end_user(failure.user_id, why)
    door.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE, user=failure.name, detail={
        "alert": f"account locked after repeated {kind} failures",
        "minutes": door.policy.lockout_seconds // 60, "sessions_ended": in_session}))
    return why
