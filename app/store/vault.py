"""The vault: the one door to everything Custodian stores.

It owns the keys, the SQLCipher index, the encrypted blobs and the audit writer. Every method
that touches PHI takes a :class:`Session`, asks :func:`app.security.roles.permits` and writes the
audit event itself, so no caller can skip either. Writers (import, shred, key rotation) hold a
file lock; readers in other processes keep working through SQLite's WAL.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import sqlcipher3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.uid import generate_uid

from app.audit.anomaly import AnomalyRules
from app.audit.context import IndexContext
from app.audit.dicom_xml import HOSTNAME, SOURCE_ID
from app.audit.events import AuditEvent, EventType, Outcome
from app.audit.log import AuditLog, ChainReport
from app.audit.reconcile import Reconciliation, reconcile
from app.audit.report import AuditQuery, AuditRecord, AuditReport, ReportKind
from app.audit.repository import HALTED_KEY, Forwarder, Repository, SyncStatus
from app.errors import (
    AuthenticationFailed,
    BusyError,
    CustodianError,
    EnrolmentRequired,
    NotAuthenticated,
    NotPermitted,
    UsageError,
    VaultExists,
    VaultNotFound,
)
from app.imaging.measure import Kind, Measurement
from app.imaging.pixels import Decoded, FrameInfo, decode_frames
from app.imaging.series import SeriesImages
from app.imaging.thumbnail import THUMBNAIL_SIZE, shrink
from app.media import dicomdir, profile
from app.media.agreements import Agreement, AgreementBook
from app.media.deid import Deidentifier
from app.media.dicomdir import Listed, file_ids
from app.media.disclosures import (
    RETENTION_YEARS,
    DisclosedStudy,
    Disclosure,
    DisclosureBook,
    ExportRequest,
    ExportResult,
    RecipientKind,
    new_serial,
)
from app.media.outside import Reconcile, Survey, open_media, reconciled, survey
from app.media.passphrase import new_passphrase
from app.media.writer import OutputFile, readme, write_media
from app.net.association import EchoResult, PeerError, echo
from app.net.commitment import CommitmentReport, request_commitment
from app.net.nodes import Node, NodeBook
from app.net.query import RemoteStudy, RetrieveReport, body_parts, find_studies, get_study, move_study
from app.net.scp import StorageScp
from app.net.send import Outgoing, SendReport, send_instances
from app.net.watch import PacsStatus
from app.security import managed_policy, passwords
from app.security.accounts import LOGIN_FAILED, Accounts, Enrolment, User
from app.security.keys import KEYSTORE_FILE, Keys, KeyStore, PassphraseSource, derive, keyring_usable
from app.security.policy import SitePolicy
from app.security.roles import DUTIES, VISIBLE_FIELDS, Action, Duty, Field, Role, blanked, permits
from app.security.sessions import Session, Sessions
from app.security.tls import TlsIdentity, server_context
from app.selftest import PASS, network_checks
from app.store import backup, index, manifest
from app.store.blobs import BLOB_DIR, BlobDamaged, BlobStore, instance_aad, seal, unseal
from app.store.faults import StorageFault
from app.store.importer import (
    IO_THREADS,
    Entry,
    ImportRun,
    Progress,
    Workers,
    demographics,
    read_source,
    study_context,
)
from app.store.ingest import DicomDirectory, Rejected, parse
from app.store.patients import (
    CONFLICT_SQL,
    REDERIVE_KEY,
    REFERENCE_SQL,
    Demographics,
    PatientBook,
    rederive,
)
from app.store.records import (
    Damage,
    ImportReport,
    SeriesSummary,
    StudySummary,
    VerifyReport,
)
from app.store.sources import iter_sources

AUDIT_SIGNING_CONTEXT = "audit-signing"
SEND_ATTEMPTS = 3
SCP_TLS_KEY = "scp_tls"
SEND_RETRY_SECONDS = 1.0
LOCK_FILE = "write.lock"
BACKUP_MASTERS = "masters.json"  # inside the sealed backup only; never written out
POLICY_REFUSED_ALERT = "managed site policy refused"
EMERGENCY_ALERT = "emergency mode: the cache is read-only"
# What emergency mode refuses: whatever changes the cache or needs the PACS.
CHANGES = frozenset({Action.IMPORT, Action.SEND, Action.EXPORT, Action.SHRED, Action.ROTATE_KEYS,
                     Action.MANAGE_USERS, Action.MANAGE_NODES, Action.SITE_POLICY, Action.RESTRICT_PATIENT,
                     Action.MANAGE_AGREEMENTS, Action.QUERY, Action.RETRIEVE, Action.PIN_STUDY,
                     Action.EVICT_CACHE, Action.PREFETCH})
TOKEN_FILE = "session.bin"
Row = tuple[Any, ...]  # a row of the index: SQLite's values carry no static type


def _negated(date: str) -> str:
    """Sorts YYYYMMDD dates newest first inside an ascending sort."""
    return "".join(str(9 - int(c)) if c.isdigit() else c for c in date)


def _deidentified(deid: Deidentifier, load: Callable[[], bytes], patient: str) -> bytes:
    return profile.for_media(deid.dataset(load(), patient))


def _on_media(load: Callable[[], bytes], patient_id: str | None) -> bytes:
    return profile.for_media(load(), patient_id)


def media_patient_ids(rows: list[Row], serial: str) -> dict[int, str]:
    """Patient ID on the media for each patient record of an export (row: ID first, record key
    fifth): its own, or for a patient without one an ID unique to this media that the disclosure
    record keeps (the media serial and a number), so two such patients never share a record there."""
    ids: dict[int, str] = {}
    without = 0
    for r in rows:
        key = int(str(r[4]))
        if key in ids:
            continue
        if not r[0]:
            without += 1
        ids[key] = str(r[0]) or f"{serial}-{without}"
    return ids


@dataclass(frozen=True)
class BackupResult:
    path: Path
    instances: int  # blobs in the backup (instances and quarantined files)
    size: int
    sha256: str
    missing: int = 0  # blob files the index names but the disk no longer has ('verify' reports them)


@dataclass(frozen=True)
class StorageHealth:
    key_mode: str  # "keyring" or "passphrase"
    cipher_errors: list[str]  # pages whose SQLCipher HMAC does not match
    quick_check: str  # "ok", or SQLite's findings
    schema: int
    newest_audit: datetime | None


@dataclass(frozen=True)
class SendResult:
    report: SendReport
    queued: bool  # the node could not be reached: the send waits in the outbox
    error: str | None


@dataclass
class _Ticket:
    event: AuditEvent
    done: bool = False
    error: BaseException | None = None


class Vault:
    def __init__(self, home: Path, keystore: KeyStore, keys: Keys, conn: sqlcipher3.Connection) -> None:
        self.home = home
        self._keystore = keystore
        self._keys = keys
        self._conn = conn
        self._db = threading.RLock()
        self._deks: dict[str, bytes] = {}
        self._queue: list[_Ticket] = []  # audit events waiting for a group commit
        self._queue_ready = threading.Condition()
        self._committing = False
        self._prefetcher: ThreadPoolExecutor | None = None  # priors of arriving studies, one at a time
        self._prefetched: set[str] = set()
        self.blobs = BlobStore(home)
        self.audit = AuditLog(conn)
        self.audit.signing_key = self._audit_signing_key()
        self.accounts = Accounts(conn)
        self.sessions = Sessions(conn, self.accounts, SitePolicy.load(conn))
        self.audit.rules = AnomalyRules(conn, lambda: self.sessions.policy, PatientBook(conn).names)
        self.audit.context = IndexContext(conn, lambda: self._nodes().list(), lambda: self.policy.ae_title)
        self._managed: dict[str, object] = {}
        self._visible = dict(VISIBLE_FIELDS)  # minimum necessary, narrowed by the managed policy
        self._managed_nodes: tuple[Node, ...] = ()
        self._managed_repository: Repository | None = None
        self.read_only = False  # emergency mode: see enter_emergency_mode
        self.notices: list[str] = []  # what opening did that the person opening should know
        self._enforce_managed_policy()
        self._rederive_patients()

    def _rederive_patients(self) -> None:
        """A vault from before patient records: studies that shared a record with another
        patient's demographics get their own (once; each split is in the audit trail)."""
        if not self._query("SELECT 1 FROM meta WHERE key = ?", (REDERIVE_KEY,)):
            return
        with self._write_lock(), self._transaction():
            splits = rederive(self._conn, self._own_demographics)
            for split in splits:
                self.audit.append(AuditEvent(
                    EventType.PATIENT_RECORD, Outcome.MINOR_FAILURE, studies=(split.study_uid,),
                    patients=(split.reference, split.was),
                    detail={"why": "the study shared a patient record with another patient's name or birth "
                                   "date (or had no Patient ID); it now has a record of its own"}))
        if splits:
            self.notices.append(
                f"{len(splits)} stud{'y' if len(splits) == 1 else 'ies'} had been filed under another "
                "patient's record (no Patient ID, or another name or birth date under the same ID) and now "
                "have records of their own; the audit trail lists them (type patient-record).")

    def _own_demographics(self, study_uid: str) -> Demographics | None:
        """What a stored study's first instance says of its patient (None if it cannot be read)."""
        row = self._conn.execute("SELECT sop_uid, blob FROM instances WHERE study_uid = ? "
                                 "ORDER BY number, sop_uid LIMIT 1", (study_uid,)).fetchone()
        if row is None:
            return None
        try:
            return demographics(parse(self._plaintext(row[0], study_uid, row[1])))
        except (BlobDamaged, OSError, Rejected, DicomDirectory):
            return None

    def _enforce_managed_policy(self) -> None:
        """Put the site's signed policy in force; one that does not verify stops the application,
        and the refusal is in the trail (fail closed: its settings cannot be known)."""
        try:
            merged: dict[str, object] = {}
            for managed in managed_policy.load():  # the system location last: it wins
                merged = {**merged, **managed.settings}
            rules = managed_policy.split(merged)
            self._managed, self._visible = rules.settings, rules.visible
            self._managed_nodes, self._managed_repository = rules.nodes, rules.repository
            self.sessions.policy = self.sessions.policy.under(self._managed)
        except (managed_policy.PolicyRefused, UsageError) as exc:
            self._record(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE,
                                    detail={"alert": POLICY_REFUSED_ALERT, "why": str(exc)}))
            self._conn.close()
            raise managed_policy.PolicyRefused(str(exc)) from None

    def _nodes(self) -> NodeBook:
        return NodeBook(self._conn, self._managed_nodes)

    @property
    def managed_settings(self) -> frozenset[str]:
        """The site policy settings the managed (signed) policy sets; nobody here may change them."""
        return frozenset(self._managed)

    def _audit_signing_key(self) -> Ed25519PrivateKey:
        """The workstation's Ed25519 key for audit checkpoints, kept like a data key (wrapped)."""
        new: dict[str, bytes] = {}
        seed = self._data_key(AUDIT_SIGNING_CONTEXT, new)
        if new:
            with self._transaction():
                self._store_data_key(AUDIT_SIGNING_CONTEXT, seed)
            self._deks[AUDIT_SIGNING_CONTEXT] = seed
        return Ed25519PrivateKey.from_private_bytes(seed)

    # ------------------------------------------------------------------ creation and opening
    @staticmethod
    def exists(home: Path) -> bool:
        return (home / KEYSTORE_FILE).exists()

    @classmethod
    def create(
        cls, home: Path, *, admin: str, password: str, passphrase: str | None,
        use_keyring: bool | None = None,
    ) -> tuple[Vault, Enrolment]:
        if cls.exists(home):
            raise VaultExists(f"A vault already exists in {home}; it was left untouched.")
        passwords.check_rules(password, admin)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in (index.INDEX_FILE, index.INDEX_FILE + "-wal", index.INDEX_FILE + "-shm"):
            (home / leftover).unlink(missing_ok=True)  # from an init that was interrupted
        if use_keyring is None:
            use_keyring = keyring_usable()
        keystore, keys = KeyStore.create(home, passphrase=passphrase, use_keyring=use_keyring)
        keystore.index_cipher = dict(index.NEW_INDEX_CIPHER)
        conn = index.connect(home, keys.index_key, create=True, cipher=keystore.index_cipher)
        vault = cls(home, keystore, keys, conn)
        with vault._transaction():
            enrolment = vault.accounts.add(admin, Role.ADMIN, password)
            vault.audit.append(AuditEvent(EventType.VAULT_CREATED, user=admin,
                                          detail={"key_mode": keystore.mode}))
        keystore.save()  # the vault exists from this moment
        return vault, enrolment

    @classmethod
    def open(cls, home: Path, passphrase_source: PassphraseSource) -> Vault:
        if not cls.exists(home):
            raise VaultNotFound(
                f"There is no vault in {home}: run 'custodian init --admin NAME' to make one."
            )
        keystore = KeyStore.load(home)
        keys = keystore.unlock(passphrase_source)
        return cls(home, keystore, keys, index.connect(home, keys.index_key, cipher=keystore.index_cipher))

    # ------------------------------------------------------------------ emergency mode
    def enter_emergency_mode(self) -> None:
        """Emergency-mode operation (HIPAA 164.308(a)(7)(ii)(C)): with the PACS and the audit
        repository both down, the cache is read-only — reading (and the audit trail, which queues)
        go on; nothing is imported, sent, exported, shredded or reconfigured until a normal start.
        Refused while either answers: then there is no emergency."""
        checks = {check.name: check for check in network_checks(self)}
        up = [name for name, check in checks.items() if check.result == PASS]
        if up:
            answering = f"The {' and the '.join(up)} answer{'s' if len(up) == 1 else ''}"
            raise UsageError(f"{answering}: start normally. Emergency mode is for when the PACS and the "
                             "audit repository are both down.")
        self.read_only = True
        self._record(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE, detail={
            "alert": EMERGENCY_ALERT, **{name: check.detail for name, check in checks.items()}}))

    @property
    def key_mode(self) -> str:
        return self._keystore.mode

    def storage_health(self) -> StorageHealth:
        """What the self-test reports of the index: SQLCipher's page authentication, SQLite's own
        check, the schema and the audit trail's newest time. No patient data is read, so it needs
        no session."""
        with self._db:
            cipher, quick, schema, newest = index.health(self._conn)
        return StorageHealth(self.key_mode, cipher, quick, schema, newest)

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=False, cancel_futures=True)  # a fetch under way just stops
        with self._db:
            self._conn.close()
        self._deks.clear()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db, index.write_transaction(self._conn):
            yield

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        with self._db:
            return self._conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _write_lock(self, wait: float = 60.0) -> Iterator[None]:
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BusyError(
                            "Another Custodian process is writing to the vault; "
                            "try again when it has finished."
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def _reader(self) -> sqlcipher3.Connection:
        """A second connection for lookups that must not wait behind a writing transaction."""
        return index.connect(self.home, self._keys.index_key, cipher=self._keystore.index_cipher)

    def _record(self, event: AuditEvent) -> None:
        """Write ``event`` durably before returning.

        A thread that already holds the index writes at once (inside its own transaction the
        event commits with it); it never waits in the queue, so the queue cannot deadlock. Other
        threads' events share one commit (group commit): one thread at a time commits everything
        queued while the others wait for it, so one fsync serves them all.
        """
        if self._db._is_owned():  # type: ignore[attr-defined]  # (RLock's, as Condition uses it)
            self.audit.append(event)
            return
        ticket = _Ticket(event)
        with self._queue_ready:
            self._queue.append(ticket)
            while not ticket.done and self._committing:
                self._queue_ready.wait()
            if not ticket.done:  # nobody is committing: this thread commits the queue
                self._committing = True
                batch, self._queue = self._queue, []
        if not ticket.done:
            error: BaseException | None = None
            try:
                with self._db:
                    self.audit.append_all([t.event for t in batch])
            except BaseException as exc:
                error = exc
            with self._queue_ready:
                for t in batch:
                    t.done, t.error = True, error
                self._committing = False
                self._queue_ready.notify_all()
        if ticket.error is not None:
            raise ticket.error

    # ------------------------------------------------------------------ sessions and the gate
    @property
    def policy(self) -> SitePolicy:
        return self.sessions.policy

    def login(self, name: str, password: str, code: str) -> tuple[str, Session]:
        """Password and authenticator code (or a recovery code, which forces re-enrolment)."""
        try:
            with self._transaction():
                verified = self.accounts.authenticate(name, password, code)
                token, session = self.sessions.open(verified.user, needs_enrolment=verified.recovery)
                self.audit.append(AuditEvent(EventType.LOGIN, user=name,
                                             detail={"recovery_code": verified.recovery}))
        except AuthenticationFailed:
            self._login_failed(name)
            raise
        return token, session

    def _login_failed(self, name: str, **detail: object) -> None:
        with self._transaction():
            locked = self.accounts.record_failure(name, self.policy)
            self.audit.append(AuditEvent(EventType.LOGIN, Outcome.MINOR_FAILURE, user=name, detail=detail))
            if locked:
                self.audit.append(AuditEvent(
                    EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE, user=name,
                    detail={"alert": "account locked after repeated login failures",
                            "minutes": self.policy.lockout_seconds // 60}))

    def begin_first_enrolment(self, name: str, password: str) -> Enrolment:
        """First login of a new account: a fresh authenticator secret, not yet stored."""
        try:
            with self._db:
                user = self.accounts.check_password(name, password)
        except AuthenticationFailed:
            self._login_failed(name, enrolment=True)
            raise
        if user.enrolled:
            raise CustodianError("This account already has an authenticator: log in with its code.")
        return self.accounts.new_enrolment(user)

    def finish_first_enrolment(self, enrolment: Enrolment, code: str) -> tuple[str, Session]:
        with self._transaction():
            user = self.accounts.get(enrolment.user.id)
            if user is None or user.disabled or user.enrolled:
                raise AuthenticationFailed(LOGIN_FAILED)
            self.accounts.confirm_enrolment(enrolment, code)
            token, session = self.sessions.open(replace(user, enrolled=True))
            self.audit.append(AuditEvent(EventType.ENROLMENT, user=user.name, detail={"first": True}))
            self.audit.append(AuditEvent(EventType.LOGIN, user=user.name))
        return token, session

    def begin_reenrolment(self, session: Session) -> Enrolment:
        """A new authenticator secret and recovery codes for the session's own user."""
        user = self.whoami(session).user
        return self.accounts.new_enrolment(user)

    def finish_reenrolment(self, session: Session, enrolment: Enrolment, code: str) -> Session:
        with self._transaction():
            user = self.sessions.check(session).user
            if enrolment.user.id != user.id:
                raise NotPermitted("An authenticator can only be set up for your own account.")
            self.accounts.confirm_enrolment(enrolment, code)
            session = self.sessions.enrolled(session)
            self.audit.append(AuditEvent(EventType.ENROLMENT, user=user.name, detail={"first": False}))
        return session

    def change_password(self, session: Session, old: str, new: str) -> None:
        user = self.whoami(session).user
        try:
            with self._transaction():
                self.accounts.check_password(user.name, old)
                self.accounts.set_password(user, new)
                self.audit.append(AuditEvent(EventType.USER_CHANGE, user=user.name,
                                             detail={"password_changed": user.name}))
        except AuthenticationFailed:
            self._login_failed(user.name, password_change=True)
            raise AuthenticationFailed("The current password is not correct.") from None

    def unlock(self, session: Session, password: str, code: str) -> Session:
        """The lock screen: the same user proves it is them and the session goes on as it was."""
        with self._db:
            self.sessions.revivable(session)  # an ended session needs a new login, not an unlock
        try:
            with self._transaction():
                verified = self.accounts.authenticate(session.user.name, password, code)
                if verified.user.id != session.user.id:
                    raise AuthenticationFailed(LOGIN_FAILED)
                live = self.sessions.revive(session)
                self.audit.append(AuditEvent(EventType.LOGIN, user=session.user.name,
                                             detail={"unlock": True}))
        except AuthenticationFailed:
            self._login_failed(session.user.name, unlock=True)
            raise
        return live

    def step_up(self, session: Session, code: str) -> None:
        """Re-authentication with the authenticator before export and break-glass."""
        user = self.whoami(session).user
        try:
            with self._transaction():
                self.accounts.check_code(user, code, "The authenticator code is not correct.")
                self.audit.append(AuditEvent(EventType.LOGIN, user=user.name, detail={"step_up": True}))
        except AuthenticationFailed:
            self._login_failed(user.name, step_up=True)
            raise

    def resume(self, token: str | None) -> Session:
        try:
            if not token:
                raise NotAuthenticated("Not logged in.")
            with self._transaction():
                return self.sessions.resume(token)
        except NotAuthenticated as exc:
            self._refuse(None, str(exc))
            raise

    def logout(self, session: Session) -> None:
        with self._transaction():
            self.sessions.end(session)
            self.audit.append(AuditEvent(EventType.LOGOUT, user=session.user.name))

    def _gate(self, session: Session, action: Action) -> User:
        """Check that ``session`` is live and its role may do ``action``; audit a refusal."""
        try:
            with self._transaction():
                live = self.sessions.check(session)
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
        return user

    def _refuse(self, user: str | None, why: str, action: Action | None = None, *,
                studies: tuple[str, ...] = (), patients: tuple[str, ...] = ()) -> None:
        """The one record of a refused access: who, why, and what they asked for."""
        self._record(AuditEvent(EventType.ACCESS_REFUSED, Outcome.MINOR_FAILURE, user=user, studies=studies,
                                patients=patients,
                                detail={**({"action": action.value} if action else {}), "why": why}))

    def _duty(self, duty: Duty) -> bool:
        """Whether the workstation's own work may run now: the one place that holds a duty to the
        action it performs (emergency mode stops those that change the cache or need the PACS)."""
        return not (self.read_only and DUTIES[duty] in CHANGES)

    def whoami(self, session: Session) -> Session:
        with self._transaction():
            return self.sessions.check(session)

    # ------------------------------------------------------------------ site policy
    def set_policy(self, session: Session, name: str, value: str) -> SitePolicy:
        actor = self._gate(session, Action.SITE_POLICY)
        if name in self._managed:
            raise UsageError(f"'{name}' is set by the site's managed policy ({self._managed[name]}); it "
                             "cannot be changed at the workstation.")
        with self._transaction():
            local = SitePolicy.load(self._conn).with_setting(name, value)
            local.save(self._conn)
            self.audit.append(AuditEvent(EventType.POLICY_CHANGE, user=actor.name,
                                         detail={"setting": name, "value": value}))
        self.sessions.policy = local.under(self._managed)
        return self.sessions.policy

    def inactivity_limit(self, user: User) -> float:
        """Seconds of inactivity after which this user's screen locks (site or own, the shorter)."""
        with self._db:
            return self.sessions.inactivity_limit(user)

    def set_own_inactivity(self, session: Session, seconds: int | None) -> float:
        """A user may lock sooner than the site requires, never later."""
        with self._transaction():
            user = self.sessions.check(session).user
            if seconds is not None and not 30 <= seconds <= self.policy.inactivity_seconds:
                raise UsageError(f"Choose from 30 to {self.policy.inactivity_seconds} seconds "
                                 "(the site's limit).")
            self._conn.execute("UPDATE users SET inactivity_seconds = ? WHERE id = ?", (seconds, user.id))
            return self.sessions.inactivity_limit(user)

    # The CLI keeps its session token between commands in a file sealed with a key derived from
    # the index key: useless outside this vault, and never in plaintext on disk.
    def save_token(self, token: str) -> None:
        from app.atomicfile import write_durable

        key = derive(self._keys.index_key, "custodian/session-file")
        write_durable(self.home / TOKEN_FILE, seal(key, token.encode(), self._keys.vault_id.encode()))

    def load_token(self) -> str | None:
        try:
            sealed = (self.home / TOKEN_FILE).read_bytes()
            key = derive(self._keys.index_key, "custodian/session-file")
            return unseal(key, sealed, self._keys.vault_id.encode()).decode()
        except (OSError, BlobDamaged):
            return None

    def clear_token(self) -> None:
        (self.home / TOKEN_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ users
    def add_user(self, session: Session, name: str, role: Role, password: str,
                 full_name: str = "") -> Enrolment:
        actor = self._gate(session, Action.MANAGE_USERS)
        with self._transaction():
            enrolment = self.accounts.add(name, role, password, full_name)
            self.audit.append(AuditEvent(EventType.USER_CHANGE, user=actor.name,
                                         detail={"added": name, "role": role.value}))
        return enrolment

    def disable_user(self, session: Session, name: str) -> None:
        actor = self._gate(session, Action.MANAGE_USERS)
        with self._transaction():
            user = self.accounts.disable(name)
            self.sessions.end_user(user.id)
            self.audit.append(AuditEvent(EventType.USER_CHANGE, user=actor.name,
                                         detail={"disabled": name}))

    def list_users(self, session: Session) -> list[User]:
        self._gate(session, Action.MANAGE_USERS)
        with self._db:
            return self.accounts.list()

    # ------------------------------------------------------------------ keys
    def _data_key(self, context: str, new_keys: dict[str, bytes] | None = None) -> bytes:
        """The DEK for a study (or the quarantine); a new one waits in ``new_keys`` to be committed."""
        dek = self._deks.get(context) or (new_keys.get(context) if new_keys is not None else None)
        if dek is not None:
            return dek
        row = self._query("SELECT kid, wrapped FROM data_keys WHERE context = ?", (context,))
        if row:
            dek = self._keys.unwrap_data_key(row[0][0], row[0][1], context)
            self._deks[context] = dek
            return dek
        if new_keys is None:
            raise CustodianError("The study's data key is gone (the study was shredded).")
        dek = new_keys[context] = os.urandom(32)
        return dek

    def _store_data_key(self, context: str, dek: bytes) -> None:
        """Keep a new data key, wrapped by the current master key; inside the caller's transaction."""
        kid, wrapped = self._keys.wrap_data_key(dek, context)
        self._conn.execute("INSERT INTO data_keys (context, kid, wrapped) VALUES (?, ?, ?)",
                           (context, kid, wrapped))

    def rotate_keys(self, session: Session, passphrase: str | None = None) -> int:
        """New master key; re-wraps every data key and the index key, re-encrypts no image."""
        actor = self._gate(session, Action.ROTATE_KEYS)
        if self._keystore.mode == "passphrase" and not passphrase:
            raise UsageError("Key rotation needs the vault passphrase.")
        with self._write_lock():
            new_kid = self._keystore.begin_rotation(self._keys, passphrase)
            with self._transaction():
                rows = self._conn.execute("SELECT id, context, kid, wrapped FROM data_keys").fetchall()
                for key_id, context, kid, wrapped in rows:
                    dek = self._keys.unwrap_data_key(kid, wrapped, context)
                    new = self._keys.wrap_data_key(dek, context, kid=new_kid)
                    self._conn.execute("UPDATE data_keys SET kid = ?, wrapped = ? WHERE id = ?",
                                       (*new, key_id))
                self.audit.append(AuditEvent(EventType.KEY_ROTATION, user=actor.name,
                                             detail={"data_keys": len(rows)}))
            self._keystore.finish_rotation(self._keys, new_kid)
        return len(rows)

    # ------------------------------------------------------------------ contingency
    def backup(self, session: Session, out: Path, passphrase: str) -> BackupResult:
        """The whole vault as one encrypted file that opens on another machine with ``passphrase``
        (HIPAA 164.308(a)(7)(ii)(A)). Writers wait while it is made, so what it holds is one
        consistent state; the file appears under its name only when complete."""
        actor = self._gate(session, Action.BACKUP)
        backup.check_passphrase(passphrase)
        if out.exists():
            raise UsageError(f"{out} already exists; choose a new file name for the backup.")
        partial_out = out.with_name(out.name + ".part")
        with self._write_lock(), tempfile.TemporaryDirectory(dir=out.parent, prefix=".custodian-") as work:
            snapshot = Path(work)
            with self._db:  # the online backup API copies a consistent state of the index
                target = index.connect(snapshot, self._keys.index_key, create=True,
                                       cipher=self._keystore.index_cipher)
                try:
                    self._conn.backup(target)
                    blobs = [b for b, in target.execute("SELECT blob FROM instances UNION ALL "
                                                        "SELECT blob FROM quarantine")]
                finally:
                    target.close()
            # A blob file already missing is damage 'verify' reports; the backup keeps the rest.
            present = [b for b in blobs if self.blobs.path(b).exists()]
            missing = len(blobs) - len(present)
            masters = json.dumps({kid: base64.b64encode(key).decode()
                                  for kid, key in self._keys.masters.items()}).encode()
            made = datetime.now(UTC).isoformat(timespec="seconds")
            header = backup.new_header(self._keystore.vault_id, made, len(present))
            members: Iterator[tuple[str, Path | bytes]] = itertools.chain(
                [(KEYSTORE_FILE, (self.home / KEYSTORE_FILE).read_bytes()), (BACKUP_MASTERS, masters),
                 (index.INDEX_FILE, snapshot / index.INDEX_FILE)],
                ((f"{BLOB_DIR}/{b[:2]}/{b}", self.blobs.path(b)) for b in present))
            try:
                with partial_out.open("xb") as sink:
                    digesting = backup.Digesting(sink)
                    backup.write(digesting, header, passphrase, members)
                    sink.flush()
                    os.fsync(sink.fileno())
                partial_out.rename(out)
            except BaseException:
                partial_out.unlink(missing_ok=True)
                raise
        digest = digesting.hexdigest()
        self._record(AuditEvent(EventType.BACKUP, user=actor.name, detail={
            "file": out.name, "instances": len(present), "missing": missing, "sha256": digest}))
        return BackupResult(out, len(present), out.stat().st_size, digest, missing)

    @classmethod
    def restore(cls, source: Path, home: Path, passphrase: str, *, vault_passphrase: str | None,
                use_keyring: bool | None = None) -> Vault:
        """A backup made by :meth:`backup`, opened into ``home`` (which must hold no vault), its
        master keys protected on this machine, its index checked; recorded in its audit trail."""
        if cls.exists(home):
            raise VaultExists(f"There is already a vault in {home}; restore into an empty folder.")
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if use_keyring is None:
            use_keyring = keyring_usable()
        with tempfile.TemporaryDirectory(dir=home, prefix=".restore-") as work, source.open("rb") as file:
            staged = Path(work)
            stream = backup.Digesting(file)  # extract reads it to the end: every byte is checked
            header, kept = backup.extract(stream, passphrase, staged, frozenset({BACKUP_MASTERS}))
            try:
                encoded = json.loads(kept[BACKUP_MASTERS])
                masters = {kid: base64.b64decode(key) for kid, key in encoded.items()}
                keystore = KeyStore.load(staged)
            except (KeyError, ValueError, CustodianError) as exc:
                raise backup.BackupDamaged("The backup's keys are missing or damaged.") from exc
            keys = keystore.adopt(masters, passphrase=vault_passphrase, use_keyring=use_keyring)
            conn = index.connect(staged, keys.index_key, cipher=keystore.index_cipher)
            try:
                cipher, quick, _, _ = index.health(conn)
            finally:
                conn.close()
            if cipher or quick != "ok":
                raise backup.BackupDamaged("The backup's index fails its integrity check; nothing was "
                                           "restored.")
            if (staged / BLOB_DIR).exists():
                (staged / BLOB_DIR).rename(home / BLOB_DIR)
            (staged / index.INDEX_FILE).rename(home / index.INDEX_FILE)
            keystore.path = home / KEYSTORE_FILE
            keystore.save()  # last: the key store appearing is what makes the folder a vault
        vault = cls(home, keystore, keys, index.connect(home, keys.index_key, cipher=keystore.index_cipher))
        vault._record(AuditEvent(EventType.RESTORE, detail={
            "backup": source.name, "sha256": stream.hexdigest(), "made": header.created,
            "instances": header.instances}))
        return vault

    # ------------------------------------------------------------------ import
    def import_paths(self, session: Session, paths: list[Path],
                     progress: Progress | None = None) -> ImportReport:
        """Files, folders (recursively) and DICOMDIRs; bad files are quarantined with a reason."""
        actor = self._gate(session, Action.IMPORT)
        sources = list(iter_sources(paths))
        entries = ((str(s.path), partial(read_source, s)) for s in sources)
        return self._import(actor.name, entries, len(sources), progress)

    def import_bytes(self, session: Session, items: list[tuple[str, bytes]],
                     progress: Progress | None = None) -> ImportReport:
        """Objects already in memory (generated, received, unpacked); same rules as files."""
        actor = self._gate(session, Action.IMPORT)
        entries = ((label, partial(bytes, data)) for label, data in items)
        return self._import(actor.name, entries, len(items), progress)

    def survey_media(self, session: Session, path: Path, passphrase: str | None = None) -> Survey:
        """What outside media holds, before anything is imported (reading it is audited)."""
        actor = self._gate(session, Action.IMPORT)
        found = survey(open_media(path, passphrase))
        self._record(AuditEvent(EventType.STUDY_LIST, user=actor.name,
                                patients=tuple(sorted({s.patient_id for s in found.studies})),
                                detail={"outside_media": path.name, "studies": len(found.studies)}))
        return found

    def import_media(self, session: Session, path: Path, passphrase: str | None = None,
                     reconcile: Reconcile | None = None, progress: Progress | None = None) -> ImportReport:
        """Outside media into the vault, read in memory and reconciled with the local patient; the
        import audits and quarantines as any other."""
        actor = self._gate(session, Action.IMPORT)
        entries = open_media(path, passphrase)
        return self._import(actor.name, reconciled(entries, reconcile), len(entries), progress)

    def receive(self, calling_ae: str, items: list[tuple[str, bytes]],
                workers: Workers | None = None) -> ImportReport:
        """Instances a DICOM peer sent (to the storage SCP, or back to a C-GET), under the same
        rules as an import.

        Receiving is the workstation's own duty (the SCP runs while nobody is logged in), so it
        needs the opened vault but no session; the audit trail names the sending AE title.
        ``workers`` (from :meth:`receiving_workers`) spares a receiver that stores instance by
        instance the cost of starting threads and a connection each time.
        """
        if not self._duty(Duty.RECEIVE):
            raise NotPermitted("Emergency mode: the cache is read-only, so nothing is received until "
                               "Custodian starts normally again.")
        entries = ((label, partial(bytes, data)) for label, data in items)
        report = self._import(f"dicom:{calling_ae}", entries, len(items), None, sweep=False,
                              workers=workers)
        pacs = self.pacs_node()
        if pacs is not None and pacs.ae_title == calling_ae and report.studies:
            self._mark_at_pacs(list(report.studies))  # from the PACS: it holds them, evictable
        elif pacs is not None:
            self._prefetch_for_arrivals(list(report.studies), calling_ae)
        return report

    def _prefetch_for_arrivals(self, study_uids: list[str], calling_ae: str) -> None:
        """A new study from a modality: its priors come from the PACS before anyone opens it."""
        new = [uid for uid in study_uids if uid not in self._prefetched]
        if not new or not self.policy.prefetch_priors:
            return
        self._prefetched.update(new)
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        for uid in new:
            self._prefetcher.submit(self._quietly, self._prefetch_priors, uid, f"arrival from {calling_ae}")

    @staticmethod
    def _quietly(call: Callable[..., object], *args: object) -> None:
        """Background work whose failure only means the priors come another time."""
        with contextlib.suppress(CustodianError, sqlcipher3.Error):
            call(*args)

    def _mark_at_pacs(self, study_uids: list[str]) -> None:
        with self._transaction():
            self._conn.executemany("UPDATE studies SET at_pacs = 1 WHERE uid = ?", [(u,) for u in study_uids])

    def receiving_workers(self) -> Workers:
        """Threads and a lookup connection for many receives; the caller closes them."""
        return Workers(self._reader())

    def sweep_unindexed(self) -> int:
        """What an interrupted import left behind; the storage SCP does this once as it starts."""
        with self._write_lock():
            return self._sweep()

    def _import(self, actor: str, entries: Iterator[Entry], total: int, progress: Progress | None,
                *, sweep: bool = True, workers: Workers | None = None) -> ImportReport:
        with self._write_lock():
            if sweep:
                self._sweep()
            run_with = workers if workers is not None else Workers(self._reader())
            try:
                return ImportRun(self, actor, run_with).run(entries, total, progress)
            except StorageFault:
                with contextlib.suppress(OSError, sqlcipher3.Error):
                    self._sweep()  # give back the space the unfinished batch took
                raise
            finally:
                if workers is None:  # ours, not the caller's
                    run_with.close()

    def _sweep(self) -> int:
        """Remove blobs left by an interrupted import (they were never indexed); needs the lock."""
        rows = self._query("SELECT blob FROM instances UNION ALL SELECT blob FROM quarantine")
        return self.blobs.sweep({r[0] for r in rows})

    # ------------------------------------------------------------------ reading
    def studies(self, session: Session, patient_id: str | None = None) -> list[StudySummary]:
        """The cached studies, with only the demographics the role may see (minimum necessary)."""
        user = self._gate(session, Action.LIST_STUDIES)
        sql = (
            "SELECT s.uid, p.id, p.patient_id, p.name, s.study_date, s.description, s.accession, "
            f"p.birth_date, p.sex, p.restricted, {REFERENCE_SQL}, {CONFLICT_SQL}, "
            "(SELECT group_concat(DISTINCT modality) FROM series WHERE study_uid = s.uid), "
            "(SELECT count(*) FROM series WHERE study_uid = s.uid), "
            "(SELECT count(*) FROM instances WHERE study_uid = s.uid) "
            "FROM studies s JOIN patients p ON p.id = s.patient"
        )
        params: tuple[object, ...] = ()
        if patient_id is not None:
            sql += " WHERE p.patient_id = ? AND p.restricted = 0"
            params = (patient_id,)
        rows = self._query(sql + " ORDER BY s.study_date DESC, s.study_time DESC", params)
        granted = self._break_glass_patients(user)
        visible = self._visible[user.role]
        result = []
        refs = set()
        for (uid, key, pid, name, date, desc, accession, birth, sex, restricted, ref, conflict, mods,
             nseries, ninst) in rows:
            shown = visible if not restricted or key in granted else frozenset()
            result.append(blanked(StudySummary(
                uid, key, pid, name, date, sorted(filter(None, (mods or "").split(","))), desc, nseries,
                ninst, accession, birth, sex, bool(restricted), bool(conflict)), shown))
            if Field.PATIENT_ID in shown:
                refs.add(ref)
        self._record(AuditEvent(EventType.STUDY_LIST, user=user.name, patients=tuple(sorted(refs)),
                                detail={"studies": len(result),
                                        **({"query": {"patient_id": patient_id}} if patient_id else {})}))
        return result

    def _break_glass_patients(self, user: User) -> set[int]:
        rows = self._query("SELECT patient FROM break_glass WHERE user_id = ? AND expires_at > ?",
                           (user.id, time.time()))
        return {r[0] for r in rows}

    def _patient_of(self, study_uid: str) -> tuple[int, str, bool] | None:
        """(patient key, the patient's reference for the audit trail, restricted) of a cached study."""
        row = self._query(f"SELECT p.id, {REFERENCE_SQL}, p.restricted FROM studies s JOIN patients p "
                          "ON p.id = s.patient WHERE s.uid = ?", (study_uid,))
        return (row[0][0], row[0][1], bool(row[0][2])) if row else None

    def _check_restriction(self, user: User, study_uid: str) -> tuple[str, ...]:
        """Refuse a restricted patient's images without a live break-glass grant; the patient IDs."""
        patient = self._patient_of(study_uid)
        if patient is None:
            return ()
        key, pid, restricted = patient
        if restricted and key not in self._break_glass_patients(user):
            self._refuse(user.name, "restricted patient", studies=(study_uid,), patients=(pid,))
            raise NotPermitted("This patient's record is restricted. In an emergency use break-glass: "
                               "state the reason and confirm with your authenticator code.")
        return (pid,)

    def restrict_patient(self, session: Session, patient_id: str, restricted: bool = True,
                         issuer: str = "") -> None:
        """Mark a patient as restricted (VIP, staff, legal hold): images only through break-glass.
        ``patient_id`` may be the reference of a patient without an ID ('noid:' and its study); every
        record with the Patient ID is marked, a conflicting one included."""
        actor = self._gate(session, Action.RESTRICT_PATIENT)
        with self._transaction():
            changed = self._conn.execute(
                f"UPDATE patients AS p SET restricted = ? WHERE {REFERENCE_SQL} = ? AND issuer = ?",
                (int(restricted), patient_id, issuer)).rowcount
            if not changed:
                raise CustodianError("No cached patient has this Patient ID.")
            self.audit.append(AuditEvent(EventType.PATIENT_RESTRICTION, user=actor.name,
                                         patients=(patient_id,), detail={"restricted": restricted}))

    def reconcile_patients(self, session: Session, study_uid: str, into_study_uid: str) -> int:
        """Declare two patient records one person: every study of ``study_uid``'s record is filed
        under ``into_study_uid``'s, whose demographics stay. An explicit, audited act of a role
        that may import (it settles what an import flagged); the number of studies moved."""
        actor = self._gate(session, Action.IMPORT)
        with self._transaction():
            moved, kept, count = PatientBook(self._conn).reconcile(study_uid, into_study_uid)
            self.audit.append(AuditEvent(
                EventType.PATIENT_RECORD, user=actor.name, studies=(study_uid, into_study_uid),
                patients=(moved, kept) if moved != kept else (kept,),
                detail={"reconciled": f"{count} stud{'y' if count == 1 else 'ies'} of the first patient "
                                      "record filed under the second, whose demographics are kept"}))
        return count

    def break_glass(self, session: Session, study_uid: str, reason: str, code: str) -> float:
        """Emergency access to a restricted patient for a bounded time; alerts the privacy officer."""
        user = self._gate(session, Action.BREAK_GLASS)
        if len(reason.strip()) < 10:
            raise UsageError("State the emergency reason in a few words (at least 10 characters).")
        patient = self._patient_of(study_uid)
        if patient is None:
            raise CustodianError("This study is not in the cache.")
        self.step_up(session, code)
        key, pid, _ = patient
        now = time.time()
        expires = now + self.policy.break_glass_seconds
        with self._transaction():
            self._conn.execute("INSERT INTO break_glass (user_id, patient, reason, granted_at, expires_at) "
                               "VALUES (?, ?, ?, ?, ?)", (user.id, key, reason.strip(), now, expires))
            self.audit.append(AuditEvent(EventType.BREAK_GLASS, Outcome.SUCCESS, user=user.name,
                                         studies=(study_uid,), patients=(pid,),
                                         detail={"reason": reason.strip(), "until": expires}))
            self.audit.append(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE,
                                         user=user.name, studies=(study_uid,), patients=(pid,),
                                         detail={"alert": "break-glass access", "reason": reason.strip()}))
        return expires

    def series(self, session: Session, study_uid: str) -> list[SeriesSummary]:
        self._gate(session, Action.LIST_STUDIES)
        rows = self._query(
            "SELECT se.uid, se.modality, se.number, se.description, count(i.sop_uid) FROM series se "
            "LEFT JOIN instances i ON i.series_uid = se.uid WHERE se.study_uid = ? "
            "GROUP BY se.uid ORDER BY se.number, se.uid", (study_uid,))
        return [SeriesSummary(uid, study_uid, mod, num, desc, n) for uid, mod, num, desc, n in rows]

    def open_series(self, session: Session, series_uid: str) -> SeriesImages:
        """The images of one series, in slice order; opening them is one audited access."""
        user = self._gate(session, Action.VIEW_IMAGES)
        images = self._series_images(series_uid, lambda info: self._frames(session, info))
        if images is None:
            raise CustodianError("This series has no images in the cache.")
        study_uid = images.instances[0].study_uid
        patients = self._check_restriction(user, study_uid)
        with self._transaction():  # the cache keeps what was opened lately
            self._conn.execute("UPDATE studies SET last_opened = ? WHERE uid = ?", (time.time(), study_uid))
            self.audit.append(AuditEvent(EventType.INSTANCES_READ, user=user.name, studies=(study_uid,),
                                         patients=patients,
                                         detail={"series": series_uid, "instances": len(images.instances)}))
        return images

    def thumbnails(self, session: Session, study_uid: str,
                   size: int = THUMBNAIL_SIZE) -> dict[str, np.ndarray]:
        """A small picture of the middle image of each series of a study, by series UID.

        Showing them is one audited access to the study. A restricted patient without a live
        break-glass grant gets none and nothing is decrypted: browsing past such a study in the
        list is not an attempt to open it (that is refused and alerted when it is opened). A series
        whose middle image cannot be decoded has no thumbnail; opening it says why.
        """
        user = self._gate(session, Action.VIEW_IMAGES)
        patient = self._patient_of(study_uid)
        if patient is None:
            return {}
        key, pid, restricted = patient
        if restricted and key not in self._break_glass_patients(user):
            return {}
        uids = [uid for uid, in self._query("SELECT uid FROM series WHERE study_uid = ?", (study_uid,))]
        pictures: dict[str, np.ndarray] = {}
        for series_uid in uids:
            images = self._series_images(series_uid, self._decode)
            if images is None:
                continue
            with contextlib.suppress(CustodianError):
                pictures[series_uid] = shrink(images.render(len(images) // 2), size)
        if pictures:
            self._record(AuditEvent(EventType.INSTANCES_READ, user=user.name, studies=(study_uid,),
                                    patients=(pid,), detail={"thumbnails": len(pictures)}))
        return pictures

    def _series_images(self, series_uid: str, loader: Callable[[FrameInfo], Decoded]) -> SeriesImages | None:
        """A series' images as the index describes them (nothing decrypted yet), or None."""
        rows = self._query(
            "SELECT i.sop_uid, i.study_uid, i.blob, i.sha256, i.transfer_syntax, i.rows, i.columns, "
            "i.frames, i.samples, i.bits_allocated, i.bits_stored, i.pixel_representation, "
            "i.photometric, i.rescale_slope, i.rescale_intercept, i.window_center, i.window_width, "
            "i.pixel_spacing, i.position, i.orientation, i.pixel_offset, i.number, i.needs_header, "
            "i.frame_positions FROM instances i WHERE i.series_uid = ? AND i.rows IS NOT NULL", (series_uid,))
        if not rows:
            return None
        (modality, frame_of_reference), = self._query(
            "SELECT modality, frame_of_reference FROM series WHERE uid = ?", (series_uid,)) or [("", "")]
        return SeriesImages([FrameInfo.from_row(row) for row in rows], loader, modality=modality or "",
                            frame_of_reference=frame_of_reference or "")

    def _frames(self, session: Session, info: FrameInfo) -> Decoded:
        with self._db:
            self.sessions.check(session)  # reading images counts as activity
        return self._decode(info)

    def _decode(self, info: FrameInfo) -> Decoded:
        return decode_frames(info, self._plaintext(info.sop_uid, info.study_uid, info.blob_id))

    # ------------------------------------------------------------------ measurements
    def save_measurement(self, session: Session, measurement: Measurement) -> Measurement:
        """Keep a reader's measurement on an instance of the cache; returns it with its number."""
        user = self._gate(session, Action.MEASURE)
        with self._transaction():
            row = self._conn.execute("SELECT study_uid, series_uid FROM instances WHERE sop_uid = ?",
                                     (measurement.sop_uid,)).fetchone()
            if row is None:
                raise CustodianError("This image is not in the cache; the measurement was not saved.")
            cursor = self._conn.execute(
                "INSERT INTO measurements (user, study_uid, series_uid, sop_uid, frame, kind, points, "
                "text, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user.name, *row, measurement.sop_uid, measurement.frame, measurement.kind.value,
                 json.dumps(measurement.points), measurement.text, time.time()))
            self._measurement_event(EventType.MEASUREMENT_SAVED, user.name, row[0], cursor.lastrowid,
                                    measurement.kind.value)
        return measurement.saved_as(cursor.lastrowid)

    def _measurement_event(self, kind: EventType, user: str, study_uid: str, ident: int | None,
                           what: str) -> None:
        """A reader's measurement or note is PHI written about the patient: in the trail with the
        patient and study, in the same transaction."""
        filed = PatientBook(self._conn).of_study(study_uid)
        self.audit.append(AuditEvent(kind, user=user, studies=(study_uid,),
                                     patients=(filed[2],) if filed else (),
                                     detail={"measurement": ident, "kind": what}))

    def measurements(self, session: Session, series_uid: str) -> list[Measurement]:
        """The session user's own measurements on a series (nobody else's)."""
        user = self._gate(session, Action.MEASURE)
        rows = self._query("SELECT id, kind, sop_uid, frame, points, text FROM measurements "
                           "WHERE user = ? AND series_uid = ? ORDER BY id", (user.name, series_uid))
        return [Measurement(Kind(kind), sop, frame, tuple(tuple(p) for p in json.loads(points)), text,
                            ident) for ident, kind, sop, frame, points, text in rows]

    def delete_measurement(self, session: Session, ident: int) -> None:
        user = self._gate(session, Action.MEASURE)
        with self._transaction():
            row = self._conn.execute("SELECT study_uid, kind FROM measurements WHERE id = ? AND user = ?",
                                     (ident, user.name)).fetchone()
            if row is None:
                return  # not this reader's (or already gone): nothing was written
            self._conn.execute("DELETE FROM measurements WHERE id = ?", (ident,))
            self._measurement_event(EventType.MEASUREMENT_DELETED, user.name, row[0], ident, row[1])

    def _plaintext(self, sop_uid: str, study_uid: str, blob_id: str) -> bytes:
        return unseal(self._data_key(study_context(study_uid)), self.blobs.read(blob_id),
                      instance_aad(sop_uid))

    def read_instance(self, session: Session, sop_uid: str) -> bytes:
        """The stored Part 10 bytes of one instance (for sending and export)."""
        user = self._gate(session, Action.VIEW_IMAGES)
        row = self._query("SELECT study_uid, blob FROM instances WHERE sop_uid = ?", (sop_uid,))
        if not row:
            raise CustodianError("This instance is not in the cache.")
        study_uid, blob_id = row[0]
        patients = self._check_restriction(user, study_uid)
        self._record(AuditEvent(EventType.INSTANCES_READ, user=user.name, studies=(study_uid,),
                                patients=patients, detail={"instances": 1}))
        return self._plaintext(sop_uid, study_uid, blob_id)

    # ------------------------------------------------------------------ integrity
    def verify(self, session: Session, progress: Progress | None = None) -> VerifyReport:
        user = self._gate(session, Action.VERIFY)
        rows = self._query("SELECT sop_uid, study_uid, blob, sha256 FROM instances "
                           "ORDER BY study_uid, sop_uid")
        report = VerifyReport(instances=len(rows))

        def check(row: Row) -> Damage | None:
            sop_uid, study_uid, blob_id, expected = row
            try:
                plain = self._plaintext(sop_uid, study_uid, blob_id)
            except BlobDamaged as exc:
                return Damage(sop_uid, str(exc))
            except CustodianError as exc:
                return Damage(sop_uid, str(exc))
            if hashlib.sha256(plain).hexdigest() != expected:
                return Damage(sop_uid, "content does not match its recorded SHA-256")
            return None

        with ThreadPoolExecutor(IO_THREADS) as pool:
            for done, damage in enumerate(pool.map(check, rows), 1):
                if damage:
                    report.damaged.append(damage)
                if progress:
                    progress(done, len(rows))
        report.ok = report.instances - len(report.damaged)
        for study_uid, recorded, actual in self._query(
                f"SELECT uid, manifest, {manifest.OF_STUDY_ROWS} FROM studies"):
            if (actual or manifest.EMPTY) != (recorded or manifest.EMPTY):
                report.damaged.append(Damage(None, "study manifest does not match its instances",
                                             study_uid=study_uid))
        self._record(AuditEvent(
            EventType.VERIFY, Outcome.SUCCESS if not report.damaged else Outcome.SERIOUS_FAILURE,
            user=user.name, detail={"instances": report.instances, "damaged": len(report.damaged)}))
        return report

    def shred(self, session: Session, study_uid: str, reason: str) -> int:
        """Destroy a study irrecoverably: its data key goes, then its blobs and index rows."""
        user = self._gate(session, Action.SHRED)
        if not reason.strip():
            raise UsageError("Shredding needs a stated reason (--reason).")
        return self._destroy(study_uid, user.name, reason, forget_measurements=True)

    def _destroy(self, study_uid: str, actor: str, reason: str, *,
                 forget_measurements: bool = False) -> int:
        with self._write_lock():
            blobs = [r[0] for r in self._query("SELECT blob FROM instances WHERE study_uid = ?",
                                               (study_uid,))]
            with self._transaction():
                conn = self._conn
                row = conn.execute("SELECT patient FROM studies WHERE uid = ?",
                                   (study_uid,)).fetchone()
                if row is None:
                    raise CustodianError("This study is not in the cache.")
                pid = conn.execute(f"SELECT {REFERENCE_SQL} FROM patients p WHERE id = ?", row).fetchone()
                # first: its message names the patient and describes the study, both about to go
                self.audit.append(AuditEvent(EventType.SHRED, user=actor, studies=(study_uid,),
                                             patients=(pid[0],) if pid else (),
                                             detail={"reason": reason, "instances": len(blobs)}))
                conn.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,))
                if forget_measurements:
                    conn.execute("DELETE FROM measurements WHERE study_uid = ?", (study_uid,))
                conn.execute("DELETE FROM series WHERE study_uid = ?", (study_uid,))
                conn.execute("DELETE FROM studies WHERE uid = ?", (study_uid,))
                conn.execute("DELETE FROM data_keys WHERE context = ?", (study_context(study_uid),))
                PatientBook(conn).drop_if_unused(row[0])
            self._deks.pop(study_context(study_uid), None)
            with self._db:
                # Old page images holding the data key must not linger in the WAL.
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for blob_id in blobs:
                self.blobs.delete(blob_id)
        return len(blobs)

    def quarantined(self, session: Session) -> list[dict[str, object]]:
        self._gate(session, Action.IMPORT)
        rows = self._query("SELECT id, source, reason, size, at FROM quarantine ORDER BY id")
        return [dict(zip(("id", "source", "reason", "size", "at"), r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ audit
    def audit_verify(self, session: Session) -> ChainReport:
        user = self._gate(session, Action.AUDIT_VERIFY)
        with self._db:
            report = self.audit.verify()
            if report.ok:
                with self._transaction():
                    self.audit.checkpoint()  # what was verified is now signed
        self._record(AuditEvent(EventType.AUDIT_READ, user=user.name,
                                detail={"verify": report.ok}))
        return report

    def record_application(self, *, started: bool) -> None:
        """The workstation application (the GUI) starting or stopping, for the audit trail."""
        self._record(AuditEvent(EventType.APPLICATION_START if started else EventType.APPLICATION_STOP,
                                user=SOURCE_ID))

    def audit_show(self, session: Session, query: AuditQuery) -> list[AuditRecord]:
        """The records ``query`` selects, newest first; reading the trail is itself recorded."""
        user = self._gate(session, Action.AUDIT_READ)
        with self._db:
            records = self.audit.records(query)
        self._record(AuditEvent(EventType.AUDIT_READ, user=user.name,
                                patients=(query.patient,) if query.patient else (),
                                detail={"records": len(records), **query.audit_detail()}))
        return records

    def audit_report(self, session: Session, kind: ReportKind, query: AuditQuery) -> AuditReport:
        """A patient access or user activity report, headed by whether the chain verified."""
        kind.check(query)
        user = self._gate(session, Action.AUDIT_READ)
        with self._db:
            records = self.audit.records(query)
            chain_ok = self.audit.verify().ok
        self._record(AuditEvent(EventType.AUDIT_READ, user=user.name,
                                patients=(query.patient,) if query.patient else (),
                                detail={"report": kind.value, "records": len(records),
                                        **query.audit_detail()}))
        return AuditReport(kind, query, records, chain_ok, user.name, datetime.now(UTC))

    # ------------------------------------------------------------------ the central audit repository
    def set_audit_repository(self, session: Session, repository: Repository) -> None:
        """Where the trail is forwarded; setting it again also resumes a sync stopped by a bad certificate."""
        actor = self._gate(session, Action.SITE_POLICY)
        if self._managed_repository is not None:
            raise UsageError("The audit repository is set by the site's managed policy; it cannot be changed "
                             "at the workstation.")
        repository.identity.check()
        with self._transaction():
            repository.save(self._conn)
            self.audit.append(AuditEvent(EventType.POLICY_CHANGE, user=actor.name, detail={
                "audit_repository": repository.address, "certificate": repository.identity.subject()}))

    def resume_audit_sync(self, session: Session) -> None:
        """Send again after an untrusted certificate stopped the sync, once an administrator has
        checked the repository (the way for a repository the managed policy sets)."""
        actor = self._gate(session, Action.SITE_POLICY)
        with self._transaction():
            self._conn.execute("DELETE FROM meta WHERE key = ?", (HALTED_KEY,))
            self.audit.append(AuditEvent(EventType.POLICY_CHANGE, user=actor.name,
                                         detail={"audit_repository": "sync resumed"}))

    def audit_forwarder(self, *, own_connection: bool = False) -> Forwarder:
        """The sender of the queue. Forwarding is the workstation's own duty, not a user's action, so
        it needs the opened vault but no session; a background thread asks for its own connection."""
        conn = self._reader() if own_connection else self._conn
        return Forwarder(AuditLog(conn, self.audit.signing_key), conn, self._managed_repository)

    def audit_sync_status(self, session: Session) -> SyncStatus:
        self._gate(session, Action.AUDIT_VERIFY)
        with self._db:
            return self.audit_forwarder().status()

    def audit_reconcile(self, session: Session, central: Path) -> Reconciliation:
        """Compare a copy of what the repository received with the local chain."""
        user = self._gate(session, Action.AUDIT_VERIFY)
        try:
            with central.open(encoding="utf-8", errors="replace") as lines, self._db:
                result = reconcile(lines, self.audit, self.audit_forwarder().status().sent_seq, HOSTNAME)
        except OSError as exc:
            raise UsageError(f"Could not read the repository's file: {exc.strerror}.") from None
        self._record(AuditEvent(EventType.AUDIT_READ, user=user.name,
                                detail={"reconcile": result.ok, "received": result.received}))
        return result

    # ------------------------------------------------------------------ PACS nodes
    def add_node(self, session: Session, node: Node) -> None:
        actor = self._gate(session, Action.MANAGE_NODES)
        if node.tls is not None:
            node.tls.check()
        with self._transaction():
            self._nodes().put(node)
            self.audit.append(AuditEvent(EventType.NODE_CHANGE, user=actor.name,
                                         detail={"node": node.name, "set": node.describe()}))

    def remove_node(self, session: Session, name: str) -> None:
        actor = self._gate(session, Action.MANAGE_NODES)
        with self._transaction():
            self._nodes().remove(name)
            self.audit.append(AuditEvent(EventType.NODE_CHANGE, user=actor.name,
                                         detail={"node": name, "removed": True}))

    def nodes(self, session: Session) -> list[Node]:
        self._gate(session, Action.ECHO_NODE)
        with self._db:
            return self._nodes().list()

    def echo_node(self, session: Session, name: str) -> EchoResult:
        user = self._gate(session, Action.ECHO_NODE)
        with self._db:
            node = self._nodes().get(name)
        try:
            result = echo(node, self.policy.ae_title)
        except CustodianError as exc:
            self._record(AuditEvent(EventType.NODE_ECHO, Outcome.MINOR_FAILURE, user=user.name,
                                    detail={"node": name, "why": str(exc)}))
            raise
        self._record(AuditEvent(EventType.NODE_ECHO, user=user.name, detail={"node": name, "ms": result.ms}))
        return result

    def storage_scp(self, *, port: int | None = None, host: str = "") -> StorageScp:
        """The storage SCP (not yet listening), as this workstation's AE title, for the PACS nodes;
        with TLS (client certificates required) once the site set an identity for it."""
        with self._db:
            senders = sorted({node.ae_title for node in self._nodes().list()})
            identity = self._scp_identity()
        tls = server_context(identity) if identity is not None else None
        if senders:  # (without any, the SCP refuses to be made)
            self.sweep_unindexed()
        workers = self.receiving_workers()
        try:
            return StorageScp(partial(self.receive, workers=workers), ae_title=self.policy.ae_title,
                              port=self.policy.scp_port if port is None else port, allowed=senders,
                              host=host, tls=tls, on_stop=workers.close, reports=self.commitment_report)
        except BaseException:
            workers.close()
            raise

    def set_scp_tls(self, session: Session, identity: TlsIdentity | None) -> None:
        """The storage SCP's TLS identity (its certificate and the CAs senders' certificates must
        chain to); None turns TLS off."""
        actor = self._gate(session, Action.SITE_POLICY)
        if identity is not None:
            identity.check()
        with self._transaction():
            if identity is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (SCP_TLS_KEY,))
            else:
                self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                   (SCP_TLS_KEY, json.dumps(asdict(identity))))
            self.audit.append(AuditEvent(EventType.POLICY_CHANGE, user=actor.name, detail={
                "scp_tls": identity.subject() if identity else "off"}))

    def _scp_identity(self) -> TlsIdentity | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (SCP_TLS_KEY,)).fetchone()
        return TlsIdentity(**json.loads(row[0])) if row else None

    # ------------------------------------------------------------------ query/retrieve
    def query(self, session: Session, node_name: str, **filters: str) -> list[RemoteStudy]:
        """Study-level C-FIND at a PACS node, shown under the same minimum-necessary rules."""
        user = self._gate(session, Action.QUERY)
        with self._db:
            node = self._nodes().get(node_name)
            restricted = {pid for (pid,) in self._conn.execute(
                "SELECT patient_id FROM patients WHERE restricted = 1")}
        asked = {k: v for k, v in filters.items() if v}
        try:
            found = find_studies(node, self.policy.ae_title, **filters)
        except CustodianError as exc:
            self._record(AuditEvent(EventType.QUERY_PACS, Outcome.MINOR_FAILURE, user=user.name,
                                    detail={"node": node_name, "query": asked, "why": str(exc)}))
            raise
        visible = self._visible[user.role]
        shown = [blanked(study, visible if study.patient_id not in restricted else frozenset())
                 for study in found]
        self._record(AuditEvent(EventType.QUERY_PACS, user=user.name,
                                patients=tuple(sorted({s.patient_id for s in found if s.patient_id})),
                                detail={"node": node_name, "query": asked, "studies": len(found)}))
        return shown

    def retrieve(self, session: Session, node_name: str, study_uid: str,
                 progress: Callable[[int, int | None], None] | None = None, *,
                 move: bool = False) -> RetrieveReport:
        """Bring a study from a PACS node into the vault, no plaintext file on the way: by C-GET on
        the same association, or (``move``) by C-MOVE to this workstation's storage SCP. For a
        move the SCP must be listening: the GUI's, else one started for the duration."""
        user = self._gate(session, Action.RETRIEVE)
        with self._db:
            node = self._nodes().get(node_name)
        workers = None if move else self.receiving_workers()
        try:
            if workers is None:
                with self._listening():
                    report = move_study(node, self.policy.ae_title, study_uid, progress)
            else:
                report = get_study(node, self.policy.ae_title, study_uid,
                                   partial(self.receive, node.ae_title, workers=workers), progress)
        except CustodianError as exc:
            self._record(AuditEvent(EventType.RETRIEVE, Outcome.SERIOUS_FAILURE, user=user.name,
                                    studies=(study_uid,), detail={"node": node_name, "why": str(exc)}))
            raise
        finally:
            if workers is not None:
                workers.close()
        outcome = Outcome.SUCCESS if not (report.refused or report.failed_at_pacs) else Outcome.MINOR_FAILURE
        self._record(AuditEvent(EventType.RETRIEVE, outcome, user=user.name, studies=(study_uid,),
                                detail={"node": node_name, "received": report.received,
                                        "refused": len(report.refused),
                                        "failed_at_pacs": report.failed_at_pacs}))
        return report

    # ------------------------------------------------------------------ send
    def send(self, session: Session, node_name: str, study_uid: str,
             progress: Callable[[int, int], None] | None = None) -> SendResult:
        """Send a cached study to a PACS node; if the node cannot be reached the send waits in the
        outbox and goes out when it is back (:meth:`flush_outbox`)."""
        user = self._gate(session, Action.SEND)
        with self._db:
            self._nodes().get(node_name)  # a clear error now for a node that does not exist
        self._check_restriction(user, study_uid)
        return self._send(user.name, node_name, study_uid, progress, queue=True)

    def _send(self, requester: str, node_name: str, study_uid: str,
              progress: Callable[[int, int], None] | None, *, queue: bool) -> SendResult:
        with self._db:
            node = self._nodes().get(node_name)
            rows = self._conn.execute(
                "SELECT sop_uid, sop_class, transfer_syntax, blob FROM instances WHERE study_uid = ? "
                "ORDER BY series_uid, number", (study_uid,)).fetchall()
            patient = self._patient_of(study_uid)
        if not rows:
            raise CustodianError("That study is not in the local cache.")
        outgoing = [Outgoing(sop, cls, ts, partial(self._plaintext, sop, study_uid, blob))
                    for sop, cls, ts, blob in rows]
        report = SendReport()
        attempts = SEND_ATTEMPTS if queue else 1  # the outbox is tried again on its own schedule
        for attempt in range(1, attempts + 1):
            remaining = [o for o in outgoing
                         if o.sop_uid not in report.sent and o.sop_uid not in report.failed]
            try:
                send_instances(node, self.policy.ae_title, remaining, report, progress)
                break
            except PeerError as exc:
                if queue and exc.transient and not report.sent and not report.failed:  # away: wait
                    self._queue_send(requester, node_name, study_uid, patient, str(exc))
                    return SendResult(report, queued=True, error=str(exc))
                if attempt == attempts or not exc.transient:
                    self._record_send(requester, node_name, study_uid, patient, report, str(exc))
                    raise
                time.sleep(SEND_RETRY_SECONDS * attempt)
        self._record_send(requester, node_name, study_uid, patient, report, None)
        pacs = self.pacs_node()
        if pacs is not None and pacs.name == node_name and not report.failed:
            self._ask_commitment(pacs, study_uid, [(o.sop_class, o.sop_uid) for o in outgoing])
        return SendResult(report, queued=False, error=None)

    def _ask_commitment(self, pacs: Node, study_uid: str, instances: list[tuple[str, str]]) -> None:
        """Ask the PACS to commit a study it just stored; the study becomes evictable when it says
        so. A PACS without storage commitment: its success status for each instance must do."""
        transaction = generate_uid()
        with self._transaction():  # first: the answer may arrive before the request returns
            self._conn.execute("INSERT INTO commitments (transaction_uid, study_uid, node, instances, "
                               "requested_at) VALUES (?, ?, ?, ?, ?)",
                               (transaction, study_uid, pacs.name, len(instances), time.time()))
        try:
            request_commitment(pacs, self.policy.ae_title, transaction, instances, self.commitment_report)
        except PeerError as exc:
            with self._transaction():
                self._conn.execute("DELETE FROM commitments WHERE transaction_uid = ?", (transaction,))
            if not exc.transient:
                self._mark_at_pacs([study_uid])

    def commitment_report(self, report: CommitmentReport) -> None:
        """The PACS's storage commitment answer (through the storage SCP or the request's own
        association): when every instance is committed, the study may leave the cache later."""
        with self._transaction():
            row = self._conn.execute("SELECT study_uid, instances, node FROM commitments "
                                     "WHERE transaction_uid = ?", (report.transaction_uid,)).fetchone()
            if row is None:
                return  # not ours, or reported twice
            study_uid, count, node = row
            self._conn.execute("UPDATE commitments SET reported_at = ?, committed = ?, failed = ? "
                               "WHERE transaction_uid = ?", (time.time(), len(report.committed),
                                                             len(report.failed), report.transaction_uid))
            complete = len(report.committed) >= count and not report.failed
            if complete:
                self._conn.execute("UPDATE studies SET at_pacs = 1 WHERE uid = ?", (study_uid,))
            self.audit.append(AuditEvent(
                EventType.COMMITMENT, Outcome.SUCCESS if complete else Outcome.MINOR_FAILURE,
                user=f"dicom:{node}", studies=(study_uid,),
                detail={"committed": len(report.committed), "failed": len(report.failed)}))

    def _queue_send(self, requester: str, node_name: str, study_uid: str,
                    patient: tuple[int, str, bool] | None, why: str) -> None:
        with self._transaction():
            self._conn.execute("INSERT INTO outbox (node, study_uid, requested_by, requested_at, last_error) "
                               "VALUES (?, ?, ?, ?, ?)", (node_name, study_uid, requester, time.time(), why))
            self.audit.append(AuditEvent(EventType.SEND, Outcome.MINOR_FAILURE, user=requester,
                                         studies=(study_uid,), patients=(patient[1],) if patient else (),
                                         detail={"node": node_name, "queued": True, "why": why}))

    def _record_send(self, requester: str, node_name: str, study_uid: str,
                     patient: tuple[int, str, bool] | None, report: SendReport, error: str | None) -> None:
        outcome = Outcome.SUCCESS if not (report.failed or error) else Outcome.MINOR_FAILURE
        self._record(AuditEvent(EventType.SEND, outcome, user=requester, studies=(study_uid,),
                                patients=(patient[1],) if patient else (),
                                detail={"node": node_name, "sent": len(report.sent),
                                        "failed": len(report.failed), **({"why": error} if error else {})}))

    def outbox(self, session: Session) -> list[dict[str, Any]]:
        """Sends still waiting for their PACS node: node, study UID, who asked, tries, why."""
        self._gate(session, Action.SEND)
        return self._waiting_sends()

    def _waiting_sends(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT id, node, study_uid, requested_by, requested_at, attempts, last_error "
                           "FROM outbox WHERE done_at IS NULL ORDER BY id")
        keys = ("id", "node", "study_uid", "requested_by", "requested_at", "attempts", "last_error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def flush_outbox(self, session: Session) -> int:
        """Try the waiting sends again now, at a technologist's request; how many went out."""
        self._gate(session, Action.SEND)
        return self._flush_outbox()

    def _flush_outbox(self) -> int:
        """Try the waiting sends again, oldest first; the workstation's duty when the PACS is back,
        like audit forwarding. Returns how many went out."""
        if not self._duty(Duty.FLUSH_OUTBOX):
            return 0
        done = 0
        for item in self._waiting_sends():
            try:
                result = self._send(str(item["requested_by"]), str(item["node"]), str(item["study_uid"]),
                                    None, queue=False)
            except CustodianError as exc:
                self._outbox_attempt(int(item["id"]), str(exc), done=False)
                continue
            self._outbox_attempt(int(item["id"]), "; ".join(result.report.failed.values()), done=True)
            done += 1
        return done

    def _outbox_attempt(self, item_id: int, error: str, *, done: bool) -> None:
        with self._transaction():
            self._conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, done_at = ? "
                               "WHERE id = ?", (error, time.time() if done else None, item_id))

    # ------------------------------------------------------------------ downtime
    def pacs_node(self) -> Node | None:
        """The site's PACS: the node the site policy names, else the first one set."""
        with self._db:
            nodes = self._nodes().list()
        named = [n for n in nodes if n.name == self.policy.pacs_node]
        return next(iter(named or nodes), None)

    def watch_pacs(self) -> PacsStatus:
        """Whether the PACS answers; when it does, the sends that waited for it go out. The
        workstation's own duty (no session), run in the background of the GUI."""
        node = self.pacs_node()
        if node is None or not self._duty(Duty.FLUSH_OUTBOX):  # (emergency mode: nothing is sent)
            return PacsStatus(node.name if node else None, False, 0)
        try:
            echo(node, self.policy.ae_title)
        except CustodianError as exc:
            return PacsStatus(node.name, False, len(self._waiting_sends()), str(exc))
        self._flush_outbox()
        return PacsStatus(node.name, True, len(self._waiting_sends()))

    @contextlib.contextmanager
    def _listening(self) -> Iterator[None]:
        """The storage SCP for a C-MOVE: started here unless one already holds the port."""
        scp = self.storage_scp()
        try:
            scp.start()
        except OSError:  # the port is taken: the workstation's own SCP (the GUI's) is running
            scp.stop()
            yield
            return
        try:
            yield
        finally:
            scp.stop()

    # ------------------------------------------------------------------ priors and the cache budget
    def prefetch_priors(self, session: Session, study_uid: str) -> list[str]:
        """The priors of a study a reader opened (see :meth:`_prefetch_priors`)."""
        user = self._gate(session, Action.PREFETCH)
        return self._prefetch_priors(study_uid, user.name)

    def _prefetch_priors(self, study_uid: str, requested_by: str) -> list[str]:
        """Fetch the patient's most relevant earlier studies from the PACS into the cache, as many
        as the site's policy says: same modality and body part first, then the same body part,
        then the same modality, the most recent first within each. The workstation's own work on
        behalf of whoever opened the study or sent it (named in the trail)."""
        node, wanted = self.pacs_node(), self.policy.prefetch_priors
        if not self._duty(Duty.PREFETCH):
            return []  # emergency mode: nothing comes into the cache
        with self._db:
            row = self._conn.execute(
                "SELECT p.patient_id, s.study_date, (SELECT group_concat(DISTINCT modality) FROM series "
                "WHERE study_uid = s.uid), (SELECT group_concat(DISTINCT upper(body_part)) FROM series "
                "WHERE study_uid = s.uid AND body_part != '') FROM studies s "
                "JOIN patients p ON p.id = s.patient WHERE s.uid = ? AND p.restricted = 0",
                (study_uid,)).fetchone()
            cached = {uid for (uid,) in self._conn.execute("SELECT uid FROM studies")}
        if node is None or not wanted or row is None or not row[0]:
            return []
        patient_id, date, modalities = row[0], row[1] or "99999999", set((row[2] or "").split(","))
        actor = f"prefetch for {requested_by}"
        try:
            found = find_studies(node, self.policy.ae_title, patient_id=patient_id)
        except CustodianError as exc:
            self._record(AuditEvent(EventType.QUERY_PACS, Outcome.MINOR_FAILURE, user=actor,
                                    patients=(patient_id,), detail={"node": node.name, "why": str(exc),
                                                                    "query": {"patient_id": patient_id}}))
            return []
        priors = [s for s in found if s.study_uid not in cached and s.study_uid != study_uid
                  and (s.study_date or "") <= date]
        regions = set((row[3] or "").split(",")) - {""}
        parts: dict[str, set[str]] = {}
        if regions and priors:
            with contextlib.suppress(CustodianError):  # without them, modality and date still rank
                parts = body_parts(node, self.policy.ae_title, [s.study_uid for s in priors])

        def relevance(s: RemoteStudy) -> tuple[bool, bool, bool, str]:
            same_modality = bool(modalities & set(s.modalities.split("\\")))
            same_region = bool(regions & parts.get(s.study_uid, set()))
            return (not (same_modality and same_region), not same_region, not same_modality,
                    _negated(s.study_date))

        priors.sort(key=relevance)
        fetched = []
        workers = self.receiving_workers()
        try:
            for prior in priors[:wanted]:
                try:
                    report = get_study(node, self.policy.ae_title, prior.study_uid,
                                       partial(self.receive, node.ae_title, workers=workers))
                except CustodianError as exc:
                    self._record(AuditEvent(EventType.RETRIEVE, Outcome.MINOR_FAILURE, user=actor,
                                            studies=(prior.study_uid,), detail={"node": node.name,
                                                                                "why": str(exc)}))
                    continue
                self._record(AuditEvent(EventType.RETRIEVE, user=actor, studies=(prior.study_uid,),
                                        patients=(patient_id,),
                                        detail={"node": node.name, "prior_of": study_uid,
                                                "received": report.received}))
                fetched.append(prior.study_uid)
        finally:
            workers.close()
        self._evict_to_budget()
        return fetched

    def evict_to_budget(self, session: Session) -> list[str]:
        """Bring the cache within its budget now (see :meth:`_evict_to_budget`)."""
        self._gate(session, Action.EVICT_CACHE)
        return self._evict_to_budget()

    def _evict_to_budget(self) -> list[str]:
        """Keep the cache within the site's budget: drop the least recently used studies the PACS
        holds (they can be fetched again), never pinned ones, ones opened in the last day, or ones
        the PACS has not confirmed. The workstation's duty after priors arrive. Returns the study
        UIDs dropped."""
        budget = self.policy.cache_budget_mb * 1_000_000
        if not budget or not self._duty(Duty.EVICT_CACHE):
            return []
        with self._db:
            total = self._conn.execute("SELECT coalesce(sum(size), 0) FROM instances").fetchone()[0]
            candidates = self._conn.execute(
                "SELECT s.uid, (SELECT coalesce(sum(size), 0) FROM instances WHERE study_uid = s.uid) "
                "FROM studies s WHERE s.at_pacs = 1 AND s.pinned = 0 AND coalesce(s.last_opened, 0) < ? "
                "ORDER BY coalesce(s.last_opened, s.imported_at)", (time.time() - 86_400,)).fetchall()
        evicted = []
        for uid, size in candidates:
            if total <= budget:
                break
            self._destroy(uid, "cache", "cache budget: least recently used, held by the PACS")
            total -= size
            evicted.append(uid)
        return evicted

    def pin_study(self, session: Session, study_uid: str, pinned: bool = True) -> None:
        """Keep a study in the cache whatever the budget (teaching file, follow-up)."""
        user = self._gate(session, Action.PIN_STUDY)
        with self._transaction():
            if not self._conn.execute("UPDATE studies SET pinned = ? WHERE uid = ?",
                                      (int(pinned), study_uid)).rowcount:
                raise CustodianError("This study is not in the cache.")
            self.audit.append(AuditEvent(EventType.STUDY_PIN, user=user.name, studies=(study_uid,),
                                         detail={"pinned": pinned}))

    def cache_usage(self, session: Session) -> dict[str, Any]:
        self._gate(session, Action.LIST_STUDIES)
        with self._db:
            total, studies = self._conn.execute(
                "SELECT coalesce(sum(size), 0), count(DISTINCT study_uid) FROM instances").fetchone()
            pinned = self._conn.execute("SELECT count(*) FROM studies WHERE pinned = 1").fetchone()[0]
        return {"bytes": total, "studies": studies, "pinned": pinned,
                "budget_mb": self.policy.cache_budget_mb}

    # ------------------------------------------------------------------ export media, disclosures
    def export(self, session: Session, request: ExportRequest, code: str,
               progress: Progress | None = None) -> ExportResult:
        """Encrypted media for ``request`` with its disclosure record; every check runs before a
        byte is written, so a refused export leaves nothing behind."""
        user = self._gate(session, Action.EXPORT)
        self._settle_disclosures()
        rows = self._query(
            "SELECT p.patient_id, p.issuer, p.name, p.restricted, p.id, s.uid, s.study_date, s.study_time, "
            "s.accession, s.description, se.uid, se.modality, se.number, i.sop_class, i.sop_uid, "
            f"i.transfer_syntax, i.number, i.blob, i.size, i.rows, {REFERENCE_SQL} FROM instances i "
            "JOIN series se ON se.uid = i.series_uid JOIN studies s ON s.uid = i.study_uid "
            f"JOIN patients p ON p.id = s.patient WHERE s.uid IN ({','.join('?' * len(request.studies))}) "
            "ORDER BY p.patient_id, p.id, s.study_date, s.uid, se.number, se.uid, i.number, i.sop_uid",
            request.studies)
        patients = tuple(sorted({str(r[20]) for r in rows}))

        def refuse(error: CustodianError) -> CustodianError:
            self._record(AuditEvent(EventType.EXPORT, Outcome.MINOR_FAILURE, user=user.name,
                                    studies=request.studies, patients=patients,
                                    detail={"why": str(error), "recipient_kind": request.recipient_kind.value,
                                            "purpose": request.purpose.value}))
            return error

        missing = set(request.studies) - {str(r[5]) for r in rows}
        if missing:
            raise refuse(CustodianError(f"{len(missing)} of the chosen studies are not in the cache."))
        records: dict[tuple[str, str], set[int]] = {}
        for r in rows:
            if r[0]:
                records.setdefault((str(r[0]), str(r[1])), set()).add(int(str(r[4])))
        if any(len(keys) > 1 for keys in records.values()):
            raise refuse(CustodianError(
                "Export refused: the chosen studies name different patients (names or birth dates differ) "
                "under the same Patient ID. Reconcile them first, or put them on separate media."))
        for study_uid in request.studies:
            self._check_restriction(user, study_uid)
        policy = self.policy
        size = sum(int(r[18]) for r in rows)
        if policy.export_max_mb and size > policy.export_max_mb * 1024 * 1024:
            raise refuse(NotPermitted(f"Export refused: {size / 2**20:.0f} MB is more than the site's limit "
                                      f"of {policy.export_max_mb} MB per export."))
        if request.purpose.value in policy.deidentify_purposes.split(",") and request.deidentify is None:
            raise refuse(NotPermitted(f"Export refused: the site requires de-identification for "
                                      f"{request.purpose.value} (--deidentify)."))
        if request.recipient_kind is RecipientKind.BUSINESS_ASSOCIATE:
            try:
                with self._db:
                    AgreementBook(self._conn).require(request.recipient, datetime.now(UTC).date())
            except CustodianError as exc:
                raise refuse(exc) from None
        output = OutputFile(request.out)  # refuses an existing name before anything is written
        disclosure_id: int | None = None
        try:
            self.step_up(session, code)
            passphrase, serial = new_passphrase(), new_serial()
            deid = Deidentifier(request.deidentify) if request.deidentify is not None else None
            ids = media_patient_ids(rows, serial)
            rows, loads, left_out = self._media_loads(rows, ids, deid)
            if not rows:
                raise refuse(CustodianError(f"Export refused: none of the chosen instances can be put on "
                                            f"media ({left_out[0][1]})."))
            entries = self._media_entries(rows, loads, ids, serial, deid)
            sha256, written = write_media(output, request.media, passphrase, entries,
                                          readme(serial, policy.ae_title, inside=False),
                                          lambda done: progress(done, len(entries)) if progress else None)
            studies = self._disclosed_studies(rows, ids)
            with self._transaction():
                disclosure_id = DisclosureBook(self._conn).open_pending(
                    request, serial, user.name, len(rows), written, sha256, studies)
            output.publish()
        except BaseException as exc:
            output.close()
            if disclosure_id is not None:
                self._settle_disclosure(disclosure_id, made=False)
            if isinstance(exc, OSError):
                raise CustodianError(f"The media could not be written: {exc.strerror or exc}.") from None
            raise
        output.close()
        self._settle_disclosure(disclosure_id, made=True)
        return ExportResult(request.out, sha256, disclosure_id, serial, len(rows), written, passphrase,
                            len(deid.flagged) if deid else 0, tuple(left_out))

    def _media_loads(self, rows: list[Row], ids: dict[int, str], deid: Deidentifier | None
                     ) -> tuple[list[Row], list[Callable[[], bytes]], list[tuple[str, str]]]:
        """How each instance is read for the media (decrypted, de-identified, in the profile's
        transfer syntax); an instance that cannot be is left out with its reason, found by trying
        every one that needs more than a copy before anything is written (a damaged JPEG, say,
        never stops the whole export). (rows kept, their loads, (SOP Instance UID, reason) left out)."""
        if deid is not None:
            for r in rows:
                deid.remember_names(str(r[4]), str(r[2]), str(r[0]))
        kept: list[tuple[Row, Callable[[], bytes]]] = []
        left_out: list[tuple[str, str]] = []
        for r in rows:
            stored = partial(self._plaintext, str(r[14]), str(r[5]), str(r[17]))
            load = partial(_deidentified, deid, stored, str(r[4])) if deid is not None else \
                partial(_on_media, stored, None if r[0] else ids[int(str(r[4]))])
            if deid is not None or not r[0] or r[15] != profile.TRANSFER_SYNTAX:
                try:
                    load()
                except CustodianError as exc:
                    left_out.append((str(r[14]), str(exc)))
                    continue
            kept.append((r, load))
        return [r for r, _ in kept], [load for _, load in kept], left_out

    def _media_entries(self, rows: list[Row], loads: list[Callable[[], bytes]],
                       ids: dict[int, str], serial: str, deid: Deidentifier | None) -> list[Entry]:
        """DICOMDIR, README.TXT and every instance, each read when the archive writer asks for it.
        Patients are told apart by their record, not by Patient ID; one without an ID carries its
        media ID (``ids``) in the directory and in its files."""
        patients = [str(r[4]) for r in rows]
        paths = file_ids([(p, str(r[5]), str(r[10])) for p, r in zip(patients, rows, strict=True)])
        listed = [Listed(ids[int(str(r[4]))], str(r[2]), str(r[5]), str(r[6]), str(r[7]), "", str(r[8]),
                         str(r[9]), str(r[10]), str(r[11]), r[12], str(r[13]), str(r[14]),
                         profile.TRANSFER_SYNTAX, r[16], path) for r, path in zip(rows, paths, strict=True)]
        if deid is not None:
            listed = [deid.listed(item, patient) for item, patient in zip(listed, patients, strict=True)]
        for n, r in enumerate(rows):
            if r[19] is None:  # not an image (SR, presentation state, KO...): its record needs more
                data = loads[n]()  # (small: kept, so it is not decrypted and de-identified again)
                header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                listed[n] = replace(listed[n], extra=header)
                loads[n] = partial(bytes, data)
        # The DICOMDIR is made first, alone: built in Python while the workers encrypt, it would
        # hold the GIL against them and slow the whole export more than it takes by itself.
        directory = dicomdir.build(listed)
        return [("DICOMDIR", lambda: directory),
                ("README.TXT", partial(readme, serial, self.policy.ae_title, inside=True)),
                *((item.path, load) for item, load in zip(listed, loads, strict=True))]

    @staticmethod
    def _disclosed_studies(rows: list[Row], ids: dict[int, str]) -> list[DisclosedStudy]:
        seen: dict[str, DisclosedStudy] = {}
        for r in rows:
            seen.setdefault(str(r[5]), DisclosedStudy(str(r[5]), ids[int(str(r[4]))], str(r[1]), str(r[2]),
                                                      str(r[6]), str(r[9])))
        return list(seen.values())

    def _settle_disclosure(self, disclosure_id: int, *, made: bool) -> None:
        """Mark a pending disclosure made or abandoned, and write its Export event (by the user
        who exported, about the patients on the media)."""
        with self._transaction():
            book = DisclosureBook(self._conn)
            book.settle(disclosure_id, made)
            record = book.get(disclosure_id)
            self.audit.append(AuditEvent(
                EventType.EXPORT, Outcome.SUCCESS if made else Outcome.SERIOUS_FAILURE, user=record.user,
                studies=tuple(s.study_uid for s in record.studies),
                patients=tuple(sorted({s.patient_id for s in record.studies})),
                detail={"disclosure": disclosure_id, "serial": record.serial, "media": record.media,
                        "recipient_kind": record.recipient_kind, "purpose": record.purpose,
                        "instances": record.instances, "sha256": record.sha256,
                        "deidentified": record.deidentified,
                        **({} if made else {"why": "the media was not completed"})}))

    def _settle_disclosures(self) -> None:
        """Disclosures an interrupted export left pending: made if its media is in place and
        unchanged, else abandoned (the media never appeared)."""
        with self._db:
            pending = DisclosureBook(self._conn).pending()
        for disclosure_id, out, expected in pending:
            path = Path(out)
            made = False
            with contextlib.suppress(OSError), path.open("rb") as fh:
                made = hashlib.file_digest(fh, "sha256").hexdigest() == expected
            self._settle_disclosure(disclosure_id, made=made)

    def disclosures(self, session: Session, patient_id: str,
                    years: int = RETENTION_YEARS) -> list[Disclosure]:
        """The patient's accounting of disclosures (HIPAA 164.528): media made in the last years."""
        user = self._gate(session, Action.DISCLOSURES)
        self._settle_disclosures()
        since = (datetime.now(UTC) - timedelta(days=365 * years + years // 4)).timestamp()
        with self._db:
            found = DisclosureBook(self._conn).for_patient(patient_id, since)
        self._record(AuditEvent(EventType.STUDY_LIST, user=user.name, patients=(patient_id,),
                                detail={"accounting_of_disclosures": len(found)}))
        return found

    def add_agreement(self, session: Session, agreement: Agreement) -> None:
        actor = self._gate(session, Action.MANAGE_AGREEMENTS)
        with self._transaction():
            AgreementBook(self._conn).put(agreement, actor.name)
            self.audit.append(AuditEvent(EventType.POLICY_CHANGE, user=actor.name, detail={
                "business_associate": agreement.recipient, "agreement": agreement.reference,
                "effective": agreement.effective, "expires": agreement.expires}))

    def revoke_agreement(self, session: Session, recipient: str, reason: str) -> None:
        actor = self._gate(session, Action.MANAGE_AGREEMENTS)
        with self._transaction():
            AgreementBook(self._conn).revoke(recipient, reason, actor.name)
            self.audit.append(AuditEvent(EventType.POLICY_CHANGE, user=actor.name, detail={
                "business_associate": recipient, "revoked": reason}))

    def agreements(self, session: Session) -> list[Agreement]:
        self._gate(session, Action.MANAGE_AGREEMENTS)
        with self._db:
            return AgreementBook(self._conn).list()
