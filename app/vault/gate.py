"""The gate: the only code that turns a session or a workstation duty into access to the store.

A service method is marked with what it needs — :func:`gated` (a live session whose role
:func:`app.security.roles.permits` the action), :func:`signed_in` (a live session, any role),
:func:`duty` (the workstation's own work, held to the action it performs) or :func:`opening`
(nobody is signed in yet: logging in, enrolling) — and receives an :class:`Access`, the one
handle on the engine, the audit writer and the account books. Services hold no engine of their
own, so a method that skips the gate has nothing to work with; a test checks that every public
service method carries a mark. Refusals, emergency mode and minimum-necessary blanking are each
decided here, once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import sqlcipher3

from app.audit.anomaly import AnomalyRules
from app.audit.context import IndexContext
from app.audit.events import AuditEvent, EventType, Outcome
from app.audit.log import AuditLog
from app.background import GroupCommit
from app.errors import EnrolmentRequired, NotAuthenticated, NotPermitted, UsageError
from app.net.errors import TlsRequired
from app.net.nodes import NodeBook
from app.security import managed_policy
from app.security.accounts import Accounts, Enrolment, User
from app.security.directory import Directory, DirectoryBook
from app.security.managed_policy import SiteRules
from app.security.policy import SitePolicy
from app.security.roles import DUTIES, VISIBLE_FIELDS, Action, Duty, Field, Role, blanked, permits
from app.security.sessions import Session, Sessions
from app.store.books import StudyBook
from app.store.core import StoreCore
from app.store.patients import PatientBook
from app.vault.directory import Recheck

POLICY_REFUSED_ALERT = "managed site policy refused"
EMERGENCY_ALERT = "emergency mode: the cache is read-only"
PLAIN_DICOM_REFUSED = "plain DICOM connection refused: the site requires TLS"
# What emergency mode refuses: whatever changes the cache or needs the PACS.
CHANGES = frozenset({Action.IMPORT, Action.IMPORT_MEDIA, Action.RECONCILE_PATIENTS, Action.SEND,
                     Action.EXPORT, Action.COPY_VIEW, Action.SHRED, Action.ROTATE_KEYS, Action.MANAGE_USERS,
                     Action.MANAGE_NODES, Action.SITE_POLICY, Action.RESTRICT_PATIENT,
                     Action.MANAGE_AGREEMENTS, Action.QUERY, Action.RETRIEVE, Action.PIN_STUDY,
                     Action.EVICT_CACHE, Action.PREFETCH, Action.SEND_KEY_IMAGES})

R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S", bound="Service")


class Access:
    """What the gate hands one permitted call: the engine, the trail and the account books, and
    the rules that apply to the caller (its name in the trail, what its role may be shown)."""

    def __init__(self, gate: Gate, actor: str, user: User | None = None, session: Session | None = None
                 ) -> None:
        self._gate = gate
        self.actor = actor  # who the audit trail names
        self.user = user  # None for a duty or before anyone is signed in
        self.session = session  # the live session, as the gate found it

    @property
    def store(self) -> StoreCore:
        return self._gate._core

    @property
    def audit(self) -> AuditLog:
        return self._gate._audit

    @property
    def accounts(self) -> Accounts:
        return self._gate._accounts

    @property
    def sessions(self) -> Sessions:
        return self._gate._sessions

    @property
    def policy(self) -> SitePolicy:
        return self._gate.policy

    def set_policy(self, local: SitePolicy) -> SitePolicy:
        """Put a changed local site policy in force (under the managed one); what now applies."""
        self._gate.policy = local
        return self._gate.policy

    @property
    def rules(self) -> SiteRules:
        """The site's managed policy, as put in force."""
        return self._gate.rules

    @property
    def signed_in(self) -> User:
        """The user of a session-bound call (a duty has none)."""
        if self.user is None:
            raise NotAuthenticated("Not logged in.")
        return self.user

    def directory(self) -> Directory | None:
        """The site's directory (the managed policy's, else this station's), if one is set."""
        return self._gate.directory()

    def nodes(self, conn: sqlcipher3.Connection | None = None) -> NodeBook:
        """The PACS nodes, read through the index's main connection (under its lock) or ``conn``."""
        return NodeBook(conn or self.store.conn, self._gate.rules.nodes, require_tls=self.policy.require_tls)

    def record(self, event: AuditEvent) -> None:
        """Write ``event`` durably: inside the caller's transaction if it holds one, else at once."""
        self._gate._record(event)

    def refuse(self, why: str, action: Action | None = None, *, studies: tuple[str, ...] = (),
               patients: tuple[str, ...] = ()) -> None:
        self._gate._refuse(self.actor, why, action, studies=studies, patients=patients)

    @property
    def visible(self) -> frozenset[Field]:
        """The demographics this caller's role may see (minimum necessary, narrowed by the site)."""
        return self._gate.rules.visible[self.signed_in.role]

    def shown(self, record: T, *, restricted: bool = False) -> T:
        """``record`` with only the demographics this caller's role may see; a restricted
        patient's (without a live break-glass grant) show none."""
        return blanked(record, frozenset() if restricted else self.visible)

    def granted(self) -> set[int]:
        """Patient records this user holds a live break-glass grant for."""
        with self.store.reading() as conn:
            return StudyBook(conn).granted(self.signed_in.id)

    def patient_of(self, study_uid: str) -> tuple[int, str, bool] | None:
        """(patient key, the patient's reference for the trail, restricted) of a cached study."""
        with self.store.reading() as conn:
            filed = StudyBook(conn).patient(study_uid)
        return (filed.key, filed.reference, bool(filed.restricted)) if filed else None

    def may_open(self, study_uid: str) -> bool:
        """Whether this user may see the study's images: not restricted, or under a live grant."""
        patient = self.patient_of(study_uid)
        return patient is None or not patient[2] or patient[0] in self.granted()

    def check_restriction(self, study_uid: str) -> tuple[str, ...]:
        """Refuse a restricted patient's images without a live break-glass grant; the patient IDs."""
        patient = self.patient_of(study_uid)
        if patient is None:
            return ()
        key, pid, restricted = patient
        if restricted and key not in self.granted():
            self.refuse("restricted patient", studies=(study_uid,), patients=(pid,))
            raise NotPermitted("This patient's record is restricted. In an emergency use break-glass: "
                               "state the reason and confirm with your authenticator code.")
        return (pid,)


class Gate:
    def __init__(self, core: StoreCore) -> None:
        self._core = core
        self._audit = AuditLog(core.conn)
        self._audit.signing_key = core.signing_key()
        self.rules = managed_policy.SiteRules({}, dict(VISIBLE_FIELDS))
        self._accounts = Accounts(core.conn)
        self._sessions = Sessions(core.conn, self._accounts, SitePolicy.load(core.conn))
        self._audit.rules = AnomalyRules(core.conn, lambda: self._sessions.policy,
                                         PatientBook(core.conn).names)
        self._audit.context = IndexContext(core.conn, lambda: NodeBook(core.conn, self.rules.nodes).list(),
                                           lambda: self.policy.ae_title)
        self._writer = GroupCommit(self._append_all)  # audit events from threads not holding the index
        self.read_only = False  # emergency mode: see Vault.enter_emergency_mode
        self._recheck = Recheck()  # directory users' live sessions
        self._enforce_managed_policy()

    @property
    def policy(self) -> SitePolicy:
        return self._sessions.policy

    @policy.setter
    def policy(self, local: SitePolicy) -> None:
        self._sessions.policy = local.under(self.rules.settings)

    def _enforce_managed_policy(self) -> None:
        """Put the site's signed policy in force; one that does not verify stops the application,
        and the refusal is in the trail (fail closed: its settings cannot be known)."""
        try:
            merged: dict[str, object] = {}
            for managed in managed_policy.load():  # the system location last: it wins
                merged = {**merged, **managed.settings}
            self.rules = managed_policy.split(merged)
            self._sessions.policy = self._sessions.policy.under(self.rules.settings)
        except (managed_policy.PolicyRefused, UsageError) as exc:
            self._record(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE,
                                    detail={"alert": POLICY_REFUSED_ALERT, "why": str(exc)}))
            self._core.conn.close()
            raise managed_policy.PolicyRefused(str(exc)) from None

    # ------------------------------------------------------------------ the ways in
    def enter(self, session: Session, action: Action) -> Access:
        """A live session whose role may do ``action``; a refusal is audited and raised."""
        try:
            with self._core.transaction():
                live = self._sessions.check(session)
            live = self._recheck(self.opening(), live)
        except NotAuthenticated as exc:
            self._refuse(session.user.name, str(exc), action)
            raise
        user = live.user
        if live.needs_enrolment:
            self._refuse(user.name, "re-enrolment pending", action)
            raise EnrolmentRequired("You logged in with a recovery code: set up your authenticator "
                                    "again before continuing.")
        if not permits(user.role, action):
            self._refuse(user.name, "role", action)
            raise NotPermitted(f"Not permitted: the {user.role.value} role may not {action.value}.")
        if self.read_only and action in CHANGES:
            self._refuse(user.name, "emergency mode", action)
            raise NotPermitted(f"Emergency mode: the cache is read-only, so you may not {action.value} "
                               "until Custodian starts normally again.")
        return Access(self, user.name, user, live)

    def live(self, session: Session) -> Access:
        """A live session, whatever its role (its own account, its own lock screen)."""
        with self._core.transaction():
            live = self._sessions.check(session)
        live = self._recheck(self.opening(), live)
        return Access(self, live.user.name, live.user, live)

    def duty(self, duty: Duty) -> Access:
        """The workstation's own work: refused while emergency mode stops the action it performs."""
        if self.read_only and DUTIES[duty] in CHANGES:
            raise NotPermitted(f"Emergency mode: the cache is read-only, so the workstation does not "
                               f"{duty.value} until Custodian starts normally again.")
        return Access(self, duty.value)

    def directory(self) -> Directory | None:
        with self._core.reading() as conn:
            book = DirectoryBook(conn)
            config = self.rules.directory or book.config()
            return Directory(config, book.secret()) if config else None

    def opening(self) -> Access:
        """Before anyone is signed in: the account books for authentication, the trail for events."""
        return Access(self, "")

    def first_admin(self, name: str, password: str) -> Enrolment:
        """The administrator a new vault is created with, and the vault's first audit event."""
        with self._core.transaction():
            enrolment = self._accounts.add(name, Role.ADMIN, password)
            self._audit.append(AuditEvent(EventType.VAULT_CREATED, user=name,
                                          detail={"key_mode": self._core.key_mode}))
        return enrolment

    # ------------------------------------------------------------------ the trail
    def note(self, event: AuditEvent) -> None:
        """An event of the vault as a whole (opened from a backup, emergency mode, a re-filing)."""
        self._record(event)

    def _refuse(self, user: str | None, why: str, action: Action | None = None, *,
                studies: tuple[str, ...] = (), patients: tuple[str, ...] = ()) -> None:
        """The one record of a refused access: who, why, and what they asked for."""
        self._record(AuditEvent(EventType.ACCESS_REFUSED, Outcome.MINOR_FAILURE, user=user, studies=studies,
                                patients=patients,
                                detail={**({"action": action.value} if action else {}), "why": why}))

    def _record(self, event: AuditEvent) -> None:
        """Write ``event`` durably before returning.

        A thread that already holds the index writes at once (inside its own transaction the
        event commits with it); it never waits in the queue, so the queue cannot deadlock. Other
        threads' events share one commit (group commit).
        """
        if self._core.lock._is_owned():  # type: ignore[attr-defined]  # (RLock's, as Condition uses it)
            self._audit.append(event)
        else:
            self._writer.submit(event)

    def _append_all(self, events: list[AuditEvent]) -> None:
        with self._core.lock:
            self._audit.append_all(events)


class Service:
    """A concern behind the gate. It holds the gate and other services, never the engine."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate


def _marked(door: Callable[..., R], kind: object) -> Callable[..., R]:
    door.__door__ = kind  # type: ignore[attr-defined]
    return door


def gated(action: Action) -> Callable[[Callable[Concatenate[S, Access, P], R]],
                                      Callable[Concatenate[S, Session, P], R]]:
    """For a session whose role may do ``action``."""
    def wrap(method: Callable[Concatenate[S, Access, P], R]) -> Callable[Concatenate[S, Session, P], R]:
        @functools.wraps(method)
        def door(self: S, session: Session, /, *args: P.args, **kwargs: P.kwargs) -> R:
            access = self._gate.enter(session, action)
            return _alerting(access, lambda: method(self, access, *args, **kwargs))
        return _marked(door, action)
    return wrap


def _alerting(access: Access, call: Callable[[], R]) -> R:
    """A plain DICOM connection the site's ``require_tls`` refused before it was made is a Security
    Alert, whoever asked for it (a user's send, query or echo, the outbox's duty)."""
    try:
        return call()
    except TlsRequired as exc:
        access.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE, user=access.actor,
                                 detail={"alert": PLAIN_DICOM_REFUSED, "node": exc.node}))
        raise


def signed_in(method: Callable[Concatenate[S, Access, P], R]) -> Callable[Concatenate[S, Session, P], R]:
    """For any live session: what a user does to their own account."""
    @functools.wraps(method)
    def door(self: S, session: Session, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self, self._gate.live(session), *args, **kwargs)
    return _marked(door, "signed in")


def duty(kind: Duty) -> Callable[[Callable[Concatenate[S, Access, P], R]], Callable[Concatenate[S, P], R]]:
    """For the workstation's own work (no session), held to the action it performs."""
    def wrap(method: Callable[Concatenate[S, Access, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def door(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            access = self._gate.duty(kind)
            return _alerting(access, lambda: method(self, access, *args, **kwargs))
        return _marked(door, kind)
    return wrap


def opening(method: Callable[Concatenate[S, Access, P], R]) -> Callable[Concatenate[S, P], R]:
    """For what comes before a session (logging in, enrolling, resuming) and what holds no
    patient data (the site's PACS address, the application's start)."""
    @functools.wraps(method)
    def door(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self, self._gate.opening(), *args, **kwargs)
    return _marked(door, "opening")
