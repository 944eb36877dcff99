"""The clients' side of the socket: the same services as an embedded vault, answered by the service.

:class:`RemoteVault` offers ``.accounts``, ``.reading``, ``.admin``… with the methods the service
offers, as it tells them (:mod:`app.service.offer`), so the CLI runs the same code in both modes and
a client loads none of the vault's services. The client holds no key and no passphrase: only its
session token, which the service bound to this OS account at login, kept in a file only this
account reads. HTTP/1.1 over the Unix socket with the standard library's client: one connection per
process, no extra start-up cost.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from app import errors
from app.atomicfile import write_durable
from app.errors import CustodianError, NotAuthenticated, NotPermitted, UsageError
from app.net.watch import PacsStatus
from app.paths import client_state_dir
from app.security.users import Session
from app.service.codec import BINARY, decode, encode
from app.service.offer import Offered, RemoteService, resolve
from app.service.parts import FILES, form
from app.service.winpipe_api import pipe_address

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from app.imaging.series import SeriesImages
    from app.security.accounts import Enrolment
    from app.security.policy import SitePolicy

TIMEOUT = 3600.0  # a retrieve or a verify may take long; the service bounds its own work
# The services whose client side reads or writes files, or decodes images, here: app.service.remote.
_FILES_HERE = frozenset({"intake", "disclosure", "trail", "admin"})


class NoService(CustodianError):
    exit_code = 1


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except PermissionError:
            sock.close()
            raise NotPermitted(f"This OS account may not connect to the workstation service at {self._path} "
                               "(it is not in the service's group).") from None
        except OSError as exc:
            sock.close()
            raise NoService(f"No workstation service answers at {self._path} "
                            f"({exc.strerror or type(exc).__name__}).") from None
        self.sock = sock


def _connection(path: Path) -> http.client.HTTPConnection:
    """To the service's Unix socket; on Windows, to its named pipe (app.service.winpipe_client)."""
    if sys.platform == "win32":
        from app.service.winpipe_client import PipeConnection

        return PipeConnection(str(path))
    return UnixConnection(path)


class Channel:
    """Requests to one service, over a kept-alive connection per thread (the viewer fetches
    images from several)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []

    @property
    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connection(self.path)
            self._all.append(conn)
        return conn

    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                files: tuple[str, FILES] | None = None) -> Any:
        """One call; ``files`` (an argument's name and its files) travel as they are."""
        payload, headers = None, {}
        if files is not None and body is not None:
            payload, kind = form(body, *files)
            headers = {"Content-Type": kind}
        elif body is not None:
            payload, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        response = self._answered(method, url, payload, headers)
        raw = response.read()
        if response.getheader("Content-Type") == BINARY:
            return raw
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            raise NoService(f"The workstation service at {self.path} gave an answer that is not JSON.") \
                from None
        if "error" in answer:
            raise _error(answer)
        return answer.get("result")

    def _answered(self, method: str, url: str, payload: bytes | None, headers: dict[str, str]
                  ) -> http.client.HTTPResponse:
        for _attempt in (1, 2):  # a kept-alive connection the service closed (restarted) is opened again
            try:
                self._conn.request(method, url, body=payload, headers=headers)
                return self._conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._conn.close()
        raise NoService(f"The workstation service at {self.path} closed the connection.")

    def read_into(self, url: str, body: dict[str, Any], out: memoryview) -> None:
        """A binary answer of known length read straight into ``out`` (a volume's pixels, in place)."""
        response = self._answered("POST", url, json.dumps(body).encode(),
                                  {"Content-Type": "application/json"})
        if response.getheader("Content-Type") != BINARY:
            raise _error(json.loads(response.read() or b"{}"))
        filled = 0
        while filled < len(out) and (n := response.readinto(out[filled:])):
            filled += n
        if filled < len(out) or response.read(1):
            self._conn.close()
            raise NoService("The images could not be read completely from the workstation service.")

    def upload(self, url: str, source: BinaryIO, size: int, token: str | None) -> Any:
        """A file as the body of one call, streamed (it may be larger than memory should hold)."""
        headers = {"Content-Type": BINARY, "Content-Length": str(size), "Authorization": f"Bearer {token}"}
        try:
            self._conn.request("POST", url, body=source, headers=headers)
        except (BrokenPipeError, ConnectionResetError):  # a kept-alive connection the service closed
            self._conn.close()
            source.seek(0)
            self._conn.request("POST", url, body=source, headers=headers)
        answer = json.loads(self._conn.getresponse().read() or b"{}")
        if "error" in answer:
            raise _error(answer)
        return answer.get("result")

    def fetch(self, url: str, into: BinaryIO) -> None:
        """A binary answer streamed into a file (media can be larger than memory should hold)."""
        self._conn.request("GET", url)
        response = self._conn.getresponse()
        if response.getheader("Content-Type") != BINARY:
            raise _error(json.loads(response.read() or b"{}"))
        while chunk := response.read(1024 * 1024):
            into.write(chunk)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


def _error(answer: dict[str, Any]) -> CustodianError:
    """The service's error as the same class, message and exit code as in embedded mode."""
    kind = getattr(errors, str(answer.get("error")), None)
    message = str(answer.get("message") or "The workstation service refused the request.")
    if isinstance(kind, type) and issubclass(kind, CustodianError):
        return kind(message)
    error = CustodianError(message)
    error.exit_code = int(answer.get("exit_code") or 1)
    return error


class RemoteAccounts(RemoteService):
    """Accounts, with the session token kept on the client's side."""

    def load_token(self) -> str | None:
        try:
            token = self._vault.token_file.read_text().strip()
        except OSError:
            return None
        return token or None

    def save_token(self, token: str) -> None:
        self._vault.token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durable(self._vault.token_file, token.encode())

    def clear_token(self) -> None:
        self._vault.token_file.unlink(missing_ok=True)

    def resume(self, token: str | None) -> Session:
        session: Session = self._vault.call(self._offered("resume"), (token,), {})
        self._vault.tokens[session.token_hash] = token or ""
        return session

    def login(self, name: str, password: str, code: str) -> tuple[str, Session]:
        return self._opened(self._vault.call(self._offered("login"), (name, password, code), {}))

    def finish_first_enrolment(self, enrolment: Enrolment, code: str) -> tuple[str, Session]:
        return self._opened(self._vault.call(self._offered("finish_first_enrolment"),
                                             (enrolment, code), {}))

    def _opened(self, answer: tuple[str, Session]) -> tuple[str, Session]:
        token, session = answer
        self._vault.tokens[session.token_hash] = token
        return token, session


class RemoteReading(RemoteService):
    """Reading: listing and asking answered as any service's; a series' images are fetched and
    decoded here (:func:`app.service.remote.open_series`, loaded with the decoders when first used)."""

    def __init__(self, vault: RemoteVault, name: str) -> None:
        super().__init__(vault, name)
        self.pool: ThreadPoolExecutor | None = None  # fetches images ahead of the viewer

    def open_series(self, session: Session, series_uid: str) -> SeriesImages:
        from app.service.remote import open_series  # (a viewer's: NumPy and the DICOM decoders)

        return open_series(self, self._vault, session, series_uid)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class RemoteVault:
    """What the CLI and GUI use of a :class:`~app.vault.Vault`, answered by the service."""

    embedded = False  # the service, not this process, does the station's own work

    def __init__(self, socket_path: Path) -> None:
        self.home = socket_path  # (where this vault is, as far as the client can say)
        self.channel = Channel(socket_path)
        self.tokens: dict[str, str] = {}  # a session's token by its hash: what the service is shown
        self.notices: list[str] = []
        # (a pipe's path is not resolved: that would open it)
        where = pipe_address(str(socket_path)) if sys.platform == "win32" else str(socket_path.resolve())
        digest = hashlib.sha256(where.encode()).hexdigest()[:16]
        self.token_file = client_state_dir() / f"session-{digest}"
        self._station: dict[str, Any] | None = None
        self._table: dict[tuple[str, str], Offered] | None = None

    def __getattr__(self, name: str) -> RemoteService:
        """A service (``vault.reading``), made when first used: those that work on files here load
        what they need then (app.service.remote)."""
        if name.startswith("_") or name not in {service for service, _ in self.offered()}:
            raise AttributeError(name)
        kind: type[RemoteService] = {"accounts": RemoteAccounts, "reading": RemoteReading}.get(
            name, RemoteService)
        if name in _FILES_HERE:
            from app.service.remote import KINDS  # (files, media and images: heavier to load)

            kind = KINDS[name]
        service = kind(self, name)
        setattr(self, name, service)
        return service

    def offered(self) -> dict[tuple[str, str], Offered]:
        """What the service offers, as it says (app.service.offer), asked once."""
        if self._table is None:
            table: list[Offered] = decode(self.channel.request("GET", "/v1/methods"), list[Offered])
            self._table = {(method.service, method.name): method for method in table}
        return self._table

    def call(self, method: Offered, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        session = None
        if method.needs_session:
            session, args = args[0], args[1:]  # the service finds the session from its token
        bound = dict(zip(method.names, args, strict=False)) | kwargs
        for name in method.own_session:
            session = bound.pop(name)
        if method.spread is not None:  # keywords the method gathers with **: sent as one dict
            named = {*method.sent, method.files}
            bound = {k: v for k, v in bound.items() if k in named} | {
                method.spread: {k: v for k, v in bound.items() if k not in named}}
        # (a progress callback stays here: the answer comes when the work is done)
        sent = {name: encode(bound[name], secrets=True) for name in method.sent
                if name in bound and not callable(bound[name])}
        files = (method.files, bound[method.files]) if method.files in bound else None
        body = {"token": self.token_of(session), "args": sent}
        result = self.channel.request("POST", f"/v1/call/{method.service}/{method.name}", body, files)
        return result if isinstance(result, bytes) else decode(result, resolve(method.returns))

    def token_of(self, session: object) -> str | None:
        if session is None:
            return None
        if not isinstance(session, Session) or session.token_hash not in self.tokens:
            raise NotAuthenticated("Not logged in.")
        return self.tokens[session.token_hash]

    def station(self) -> dict[str, Any]:
        if self._station is None:
            self._station = self.channel.request("GET", "/v1/station")
        return self._station

    def watch_pacs(self) -> PacsStatus:
        """What the service's last PACS check found (none yet: as if no PACS were set); the
        service does the check and the sends."""
        try:
            status: PacsStatus | None = decode(self.channel.request("GET", "/v1/pacs"), PacsStatus | None)
        except CustodianError as exc:
            return PacsStatus(None, False, 0, str(exc))
        return status or PacsStatus(None, False, 0)

    @property
    def policy(self) -> SitePolicy:
        policy: SitePolicy = decode(self.station()["policy"], resolve("app.security.policy.SitePolicy"))
        return policy

    @property
    def key_mode(self) -> str:
        return str(self.station()["key_storage"])

    @property
    def read_only(self) -> bool:
        return bool(self.station()["read_only"])

    @property
    def managed_settings(self) -> frozenset[str]:
        return frozenset(self.station()["managed_settings"])

    def enter_emergency_mode(self) -> None:
        raise UsageError("Emergency mode is the workstation service's: it starts read-only when the PACS "
                         "and the audit repository are both down. Ask the site's administrator.")

    def close(self) -> None:
        reading = vars(self).get("reading")
        if isinstance(reading, RemoteReading):
            reading.close()
        self.channel.close()

    def __enter__(self) -> RemoteVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

