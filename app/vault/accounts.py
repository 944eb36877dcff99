"""Signing in and one's own account: login, enrolment, unlock, step-up, password, lock time."""

from __future__ import annotations

from dataclasses import replace

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import AuthenticationFailed, CustodianError, NotAuthenticated, NotPermitted, UsageError
from app.security.accounts import LOGIN_FAILED, Enrolment, User
from app.security.sessions import Session
from app.vault.gate import Access, Service, opening, signed_in


class AccountService(Service):
    @opening
    def login(self, door: Access, name: str, password: str, code: str, peer_uid: int | None = None
              ) -> tuple[str, Session]:
        """Password and authenticator code (or a recovery code, which forces re-enrolment).
        ``peer_uid``: in service mode, the client's OS account, which alone may use the session."""
        try:
            with door.store.transaction():
                verified = door.accounts.authenticate(name, password, code)
                token, session = door.sessions.open(verified.user, needs_enrolment=verified.recovery,
                                                    peer_uid=peer_uid)
                door.record(AuditEvent(EventType.LOGIN, user=name,
                                       detail={"recovery_code": verified.recovery}))
        except AuthenticationFailed:
            _failed(door, name)
            raise
        return token, session

    @opening
    def begin_first_enrolment(self, door: Access, name: str, password: str) -> Enrolment:
        """First login of a new account: a fresh authenticator secret, not yet stored."""
        try:
            with door.store.reading():
                user = door.accounts.check_password(name, password)
        except AuthenticationFailed:
            _failed(door, name, enrolment=True)
            raise
        if user.enrolled:
            raise CustodianError("This account already has an authenticator: log in with its code.")
        return door.accounts.new_enrolment(user)

    @opening
    def finish_first_enrolment(self, door: Access, enrolment: Enrolment, code: str,
                               peer_uid: int | None = None) -> tuple[str, Session]:
        with door.store.transaction():
            user = door.accounts.get(enrolment.user.id)
            if user is None or user.disabled or user.enrolled:
                raise AuthenticationFailed(LOGIN_FAILED)
            door.accounts.confirm_enrolment(enrolment, code)
            token, session = door.sessions.open(replace(user, enrolled=True), peer_uid=peer_uid)
            door.record(AuditEvent(EventType.ENROLMENT, user=user.name, detail={"first": True}))
            door.record(AuditEvent(EventType.LOGIN, user=user.name))
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
        user = door.signed_in
        try:
            with door.store.transaction():
                door.accounts.check_password(user.name, old)
                door.accounts.set_password(user, new)
                door.record(AuditEvent(EventType.USER_CHANGE, user=user.name,
                                       detail={"password_changed": user.name}))
        except AuthenticationFailed:
            _failed(door, user.name, password_change=True)
            raise AuthenticationFailed("The current password is not correct.") from None

    @opening
    def unlock(self, door: Access, session: Session, password: str, code: str) -> Session:
        """The lock screen: the same user proves it is them and the session goes on as it was."""
        with door.store.reading():
            door.sessions.revivable(session)  # an ended session needs a new login, not an unlock
        try:
            with door.store.transaction():
                verified = door.accounts.authenticate(session.user.name, password, code)
                if verified.user.id != session.user.id:
                    raise AuthenticationFailed(LOGIN_FAILED)
                live = door.sessions.revive(session)
                door.record(AuditEvent(EventType.LOGIN, user=session.user.name, detail={"unlock": True}))
        except AuthenticationFailed:
            _failed(door, session.user.name, unlock=True)
            raise
        return live

    @signed_in
    def step_up(self, door: Access, code: str) -> None:
        """Re-authentication with the authenticator before export and break-glass."""
        user = door.signed_in
        try:
            with door.store.transaction():
                door.accounts.check_code(user, code, "The authenticator code is not correct.")
                door.record(AuditEvent(EventType.LOGIN, user=user.name, detail={"step_up": True}))
        except AuthenticationFailed:
            _failed(door, user.name, step_up=True)
            raise

    @opening
    def held(self, door: Access, token: str, peer_uid: int | None = None) -> Session:
        """The session of ``token`` as it stands, live or locked after inactivity (for the lock
        screen of a service client, which holds only the token); ended ones are refused."""
        with door.store.reading():
            session = door.sessions.held(token, peer_uid)
            door.sessions.revivable(session)
        return session

    @opening
    def resume(self, door: Access, token: str | None, peer_uid: int | None = None) -> Session:
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


def _failed(door: Access, name: str, **detail: object) -> None:
    """A failed password or code: counted toward the lockout, in the trail, alerted on a lock."""
    with door.store.transaction():
        locked = door.accounts.record_failure(name, door.policy)
        door.record(AuditEvent(EventType.LOGIN, Outcome.MINOR_FAILURE, user=name, detail=detail))
        if locked:
            door.record(AuditEvent(
                EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE, user=name,
                detail={"alert": "account locked after repeated login failures",
                        "minutes": door.policy.lockout_seconds // 60}))
