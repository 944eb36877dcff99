"""Store-and-forward of the audit trail to the central audit repository (IHE ATNA, ITI-20).

The local chain is the queue: a cursor in the index says up to which sequence number the
repository has confirmed receipt, so events written while it is unreachable simply wait and go
out in order when it returns, after a restart too. Syslog over TLS has no acknowledgement, so a
batch counts as delivered only when the repository, having read our TLS close, closes its side:
it has then consumed every byte before it. A batch cut off earlier is sent again; its records
carry their sequence number and hash, so the repository recognises the duplicates.

A repository whose certificate does not verify is not a network fault but a possible
impersonation: sending stops until an administrator sets the repository again, and a security
alert is written (it waits in the queue like every other event).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import sqlcipher3

from app.audit.dicom_xml import HOSTNAME
from app.audit.events import AuditEvent, EventType, Outcome
from app.audit.log import AuditLog
from app.audit.syslog import checkpoint_message, event_message, frame
from app.background import Periodic, Step
from app.errors import CustodianError, UsageError
from app.security.tls import TlsIdentity, client_context
from app.store.index import write_transaction

CONFIG_KEY = "audit_repository"
SENT_KEY = "audit_sent_seq"
HALTED_KEY = "audit_sync_halted"
BATCH = 2000
CONNECT_TIMEOUT = 10.0
UNTRUSTED_ALERT = "audit repository certificate not trusted"


class RepositoryUnreachable(CustodianError):
    """The repository could not be reached or did not confirm; the events stay queued."""


class RepositoryHalted(CustodianError):
    """Sending is stopped because the repository's certificate did not verify."""


@dataclass(frozen=True)
class Repository:
    host: str
    port: int
    identity: TlsIdentity
    server_name: str = ""  # the name its certificate must carry; the host when empty

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port < 65536:
            raise UsageError("The audit repository needs a host and a port from 1 to 65535.")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def save(self, conn: sqlcipher3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (CONFIG_KEY, json.dumps(asdict(self))))
        conn.execute("DELETE FROM meta WHERE key = ?", (HALTED_KEY,))

    @classmethod
    def load(cls, conn: sqlcipher3.Connection) -> Repository | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (CONFIG_KEY,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return cls(**{**data, "identity": TlsIdentity(**data["identity"])})


@dataclass(frozen=True)
class SyncStatus:
    configured: bool
    address: str | None
    sent_seq: int
    head_seq: int
    halted: str | None

    @property
    def pending(self) -> int:
        return self.head_seq - self.sent_seq


@dataclass(frozen=True)
class SyncResult:
    sent: int
    status: SyncStatus


class Forwarder:
    """Sends what the repository has not yet confirmed; one per connection to the index."""

    def __init__(self, log: AuditLog, conn: sqlcipher3.Connection, managed: Repository | None = None) -> None:
        self._log = log
        self._conn = conn
        self._managed = managed  # the site's managed policy names the repository: it wins

    def _repository(self) -> Repository | None:
        return self._managed or Repository.load(self._conn)

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        with write_transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def status(self) -> SyncStatus:
        repository = self._repository()
        return SyncStatus(repository is not None, repository.address if repository else None,
                          int(self._meta(SENT_KEY) or 0), self._log.head(), self._meta(HALTED_KEY))

    def drain(self, batch: int = BATCH, stop: threading.Event | None = None) -> SyncResult:
        """Send every queued record, oldest first, in batches the repository confirms."""
        repository = self._repository()
        if repository is None:
            raise UsageError("No audit repository is set: an administrator sets one with "
                             "'custodian audit repository set'.")
        halted = self._meta(HALTED_KEY)
        if halted:
            raise RepositoryHalted(f"Audit sync is stopped: {halted}. The events stay queued; an "
                                   "administrator must check the repository, then set it again or run "
                                   "'custodian audit repository resume'.")
        context = client_context(repository.identity)
        sent = 0
        while stop is None or not stop.is_set():
            entries = self._log.entries(int(self._meta(SENT_KEY) or 0), batch)
            if not entries:
                break
            head = self._log.sign_head(entries[-1])
            payload = b"".join(frame(event_message(e, HOSTNAME)) for e in entries)
            payload += frame(checkpoint_message(head, HOSTNAME, self._log.key_id))
            self._send(repository, context, payload)
            self._set_meta(SENT_KEY, str(entries[-1].seq))
            sent += len(entries)
        return SyncResult(sent, self.status())

    def _send(self, repository: Repository, context: ssl.SSLContext, payload: bytes) -> None:
        where = f"The audit repository at {repository.address}"
        queued = "the events stay queued and go out when it is back"
        started = time.monotonic()
        try:
            raw = socket.create_connection((repository.host, repository.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise RepositoryUnreachable(f"{where} is unreachable ({_reason(exc)}); {queued}.") from None
        try:
            server_name = repository.server_name or repository.host
            with raw, context.wrap_socket(raw, server_hostname=server_name) as tls:
                if _closed_after_handshake(tls, time.monotonic() - started):
                    raise RepositoryUnreachable(
                        f"{where} closed the connection after the handshake: it does not accept this "
                        f"workstation's certificate. Nothing was sent; {queued}.")
                tls.sendall(payload)
                # It closes once it has read our close, with or without a TLS goodbye: delivered.
                with contextlib.suppress(ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    tls.unwrap()
        except ssl.SSLCertVerificationError as exc:
            self._halt(repository, exc.verify_message or "certificate verify failed")
            raise RepositoryHalted(
                f"{where} presented a certificate this workstation does not trust "
                f"({exc.verify_message}). Sending is stopped and a security alert was recorded; "
                "the events stay queued.") from None
        except ssl.SSLError as exc:
            raise RepositoryUnreachable(f"{where} refused the secure connection ({exc.reason}); "
                                        f"{queued}.") from None
        except OSError as exc:
            raise RepositoryUnreachable(f"{where} did not confirm receipt ({_reason(exc)}); "
                                        f"{queued}.") from None

    def _halt(self, repository: Repository, why: str) -> None:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        self._set_meta(HALTED_KEY, f"the repository at {repository.address} presented an untrusted "
                                   f"certificate ({why}) at {at}")
        self._log.append(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE,
                                    detail={"alert": UNTRUSTED_ALERT, "repository": repository.address,
                                            "why": why}))


def _closed_after_handshake(tls: ssl.SSLSocket, handshake_seconds: float) -> bool:
    """Whether the repository hung up right after the handshake.

    Repositories (rsyslog among them) check the client certificate after the TLS handshake and
    just close when they refuse it; under TLS 1.3 the client cannot otherwise tell that close from
    the one that confirms a delivered batch. The refusal comes within about one round trip, so
    waiting two handshakes' time for it tells the two apart before anything is sent.
    """
    wait = min(max(2 * handshake_seconds, 0.05), 2.0)
    if not select.select([tls], [], [], wait)[0]:
        return False
    tls.settimeout(wait)
    try:
        return tls.recv(1) == b""  # a repository never sends data, so anything readable is a close
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
        return True
    except TimeoutError:
        return False  # a TLS record that carried no data (a session ticket)
    finally:
        tls.settimeout(CONNECT_TIMEOUT)


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or type(exc).__name__


def sync_job(forwarder: Callable[[], Forwarder],
             on_status: Callable[[SyncStatus, str | None], None] | None = None,
             interval: float = 2.0) -> Periodic:
    """Forward the trail in the background of the GUI (or `audit sync --watch`), backing off while
    the repository is away and idle while it is halted, until woken."""

    def setup() -> Step:
        sender = forwarder()  # made on the job's thread: its index connection belongs there

        def step(stop: threading.Event) -> str | None:
            error: str | None = None
            try:
                sender.drain(stop=stop)
            except (CustodianError, sqlcipher3.Error) as exc:
                error = str(exc)
            if on_status is not None:
                on_status(sender.status(), error)
            return error

        return step

    return Periodic("audit-sync", setup, interval=interval, max_backoff=30.0)
