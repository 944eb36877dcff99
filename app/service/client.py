"""The clients' side of the socket: the same services as an embedded vault, answered by the service.

:class:`RemoteVault` offers ``.accounts``, ``.reading``, ``.admin``… with the methods the service
offers (:mod:`app.service.methods`), so the CLI runs the same code in both modes. The client holds
no key and no passphrase: only its session token, which the service bound to this OS account at
login, kept in a file only this account reads. HTTP/1.1 over the Unix socket with the standard
library's client: one connection per process, no extra start-up cost.
"""

from __future__ import annotations

import hashlib
import http.client
import inspect
import itertools
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from app import errors
from app.atomicfile import write_durable
from app.audit.reconcile import Reconciliation
from app.errors import CustodianError, NotAuthenticated, NotPermitted, UsageError
from app.imaging.pixels import Decoded, FrameInfo, decode_frames, native_buffer, native_decoded, native_size
from app.imaging.series import SeriesFrames, SeriesImages
from app.media.disclosures import ExportRequest, ExportResult
from app.media.outside import Reconcile, Survey, open_media, survey
from app.media.writer import OutputFile
from app.net.watch import PacsStatus
from app.paths import client_state_dir
from app.security.accounts import Enrolment
from app.security.policy import SitePolicy
from app.security.sessions import Session
from app.service.codec import BINARY, decode, encode
from app.service.methods import METHODS, SERVICES, Method
from app.service.parts import FILES, form
from app.service.readahead import ReadAhead, fetchers
from app.service.winpipe_api import pipe_address
from app.store.contingency import BackupResult
from app.store.importer import Unreadable, read_source
from app.store.limits import IntakeLimits
from app.store.records import ImportReport, Rejection
from app.store.sources import iter_sources

IMPORT_BATCH = 48 * 1024 * 1024  # bytes of files per call (the service bounds a request)
TIMEOUT = 3600.0  # a retrieve or a verify may take long; the service bounds its own work


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


class RemoteService:
    """One service (``accounts``, ``reading``…) as offered through the socket."""

    def __init__(self, vault: RemoteVault, name: str) -> None:
        self._vault = vault
        self._name = name

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = METHODS.get((self._name, name))
        if method is None:
            raise UsageError(f"This is not available through the workstation service "
                                 f"({self._name} {name.replace('_', ' ')}).")
        return lambda *args, **kwargs: self._vault.call(method, args, kwargs)


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
        session: Session = self._vault.call(METHODS[("accounts", "resume")], (token,), {})
        self._vault.tokens[session.token_hash] = token or ""
        return session

    def login(self, name: str, password: str, code: str) -> tuple[str, Session]:
        return self._opened(self._vault.call(METHODS[("accounts", "login")], (name, password, code), {}))

    def finish_first_enrolment(self, enrolment: Enrolment, code: str) -> tuple[str, Session]:
        return self._opened(self._vault.call(METHODS[("accounts", "finish_first_enrolment")],
                                             (enrolment, code), {}))

    def _opened(self, answer: tuple[str, Session]) -> tuple[str, Session]:
        token, session = answer
        self._vault.tokens[session.token_hash] = token
        return token, session


class RemoteReading(RemoteService):
    """Reading: a series is opened in the service (audited there) and its images fetched as the
    viewer needs them, a few ahead in the direction it reads (:mod:`app.service.readahead`),
    decoded here."""

    def __init__(self, vault: RemoteVault, name: str) -> None:
        super().__init__(vault, name)
        self._pool: ThreadPoolExecutor | None = None

    def open_series(self, session: Session, series_uid: str) -> SeriesImages:
        frames: SeriesFrames = self.open_frames(session, series_uid)
        images = frames.images(lambda info: decode_frames(info, ahead.get(info.sop_uid)),
                               partial(self._together, session, series_uid))
        ahead = ReadAhead([info.sop_uid for info in images.instances],
                          partial(self.frame_data, session), self._fetchers())
        return images

    def _together(self, session: Session, series_uid: str, infos: list[FrameInfo]) -> list[Decoded]:
        """Many native images in one answer (a volume), read into one buffer their arrays share."""
        sizes = [native_size(info) for info in infos]
        pixels = native_buffer(sum(sizes))
        self._vault.channel.read_into("/v1/pixels", {"token": self._vault.token_of(session),
                                                     "series_uid": series_uid,
                                                     "sop_uids": [info.sop_uid for info in infos]}, pixels)
        return [native_decoded(info, pixels[end - size:end])
                for info, size, end in zip(infos, sizes, itertools.accumulate(sizes), strict=True)]

    def _fetchers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = fetchers()
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class RemoteIntake(RemoteService):
    """Intake: files and media are read here, as this OS account (the service cannot read them),
    within the site's intake limits, and sent a batch at a time (the service applies the limits
    again to what it is sent)."""

    def import_paths(self, session: Session, paths: list[Path], progress: Any = None) -> ImportReport:
        report = ImportReport()
        for batch, unreadable in _batches(_readers(paths, self._limits())):
            report.rejected.extend(unreadable)
            if batch:
                _add(report, self.import_bytes(session, batch))
        return report

    def survey_media(self, session: Session, path: Path, passphrase: str | None = None) -> Survey:
        limits = self._limits()
        found = survey(open_media(path, passphrase, limits), limits)
        self.surveyed(session, path.name, found)
        return found

    def import_media(self, session: Session, path: Path, passphrase: str | None = None,
                     reconcile: Reconcile | None = None, progress: Any = None) -> ImportReport:
        report = ImportReport()
        for batch, unreadable in _batches(open_media(path, passphrase, self._limits())):
            report.rejected.extend(unreadable)
            if batch:
                _add(report, self.import_media_items(session, batch, reconcile))
        return report

    def _limits(self) -> IntakeLimits:
        return IntakeLimits.of(self._vault.policy)


def _add(report: ImportReport, part: ImportReport) -> None:
    report.imported += part.imported
    report.duplicates += part.duplicates
    report.rejected.extend(part.rejected)
    report.studies |= part.studies
    report.warnings.extend(part.warnings)


def _readers(paths: list[Path], limits: IntakeLimits) -> list[tuple[str, Callable[[], bytes]]]:
    return [(str(source.path), partial(read_source, source, limits))
            for source in iter_sources(paths, limits)]


def _batches(entries: list[tuple[str, Callable[[], bytes]]]
             ) -> Iterator[tuple[list[tuple[str, bytes]], list[Rejection]]]:
    """Files read a batch at a time (bounded in memory); those that cannot be read, with why."""
    batch: list[tuple[str, bytes]] = []
    unreadable: list[Rejection] = []
    size = 0
    for label, read in entries:
        try:
            data = read()
        except (Unreadable, OSError, CustodianError) as exc:
            unreadable.append(Rejection(label, str(exc)))
            continue
        if batch and size + len(data) > IMPORT_BATCH:
            yield batch, unreadable
            batch, unreadable, size = [], [], 0
        batch.append((label, data))
        size += len(data)
    yield batch, unreadable


class RemoteDisclosure(RemoteService):
    """Export: the service makes the encrypted media in its own folder and records the disclosure;
    the media is fetched here, as this OS account, into the file asked for."""

    def export(self, session: Session, request: ExportRequest, code: str, progress: Any = None
               ) -> ExportResult:
        result: ExportResult = self._vault.spooled(
            "/v1/export", request.out, ExportResult,
            {"token": self._vault.token_of(session), "request": encode(request), "code": code},
            lambda made: f"The media was made and disclosure #{made.disclosure_id} recorded")
        return result


class RemoteTrail(RemoteService):
    """Audit reconciliation: the repository's file is read here, as this OS account, and streamed
    to the service, which compares it with the chain."""

    def reconcile(self, session: Session, central: Path) -> Reconciliation:
        try:
            with central.open("rb") as source:
                token, size = self._vault.token_of(session), os.fstat(source.fileno()).st_size
                answer = self._vault.channel.upload("/v1/reconcile", source, size, token)
        except OSError as exc:
            raise UsageError(f"Could not read the repository's file: {exc.strerror}.") from None
        result: Reconciliation = decode(answer, Reconciliation)
        return result


class RemoteAdmin(RemoteService):
    """Backup: the service makes the sealed file in its own folder; it is fetched here, as this
    OS account, into the file asked for."""

    def backup(self, session: Session, out: Path, passphrase: str) -> BackupResult:
        result: BackupResult = self._vault.spooled(
            "/v1/backup", out, BackupResult,
            {"token": self._vault.token_of(session), "out": str(out), "passphrase": passphrase},
            lambda made: "The backup was made and recorded")
        return result


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
        self.accounts = RemoteAccounts(self, "accounts")
        self.intake = RemoteIntake(self, "intake")
        self.reading = RemoteReading(self, "reading")
        self.disclosure = RemoteDisclosure(self, "disclosure")
        self.admin = RemoteAdmin(self, "admin")
        self.trail = RemoteTrail(self, "trail")
        for name in SERVICES:
            if name not in ("accounts", "intake", "reading", "disclosure", "admin", "trail"):
                setattr(self, name, RemoteService(self, name))
        self._station: dict[str, Any] | None = None

    def call(self, method: Method, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wrapped = getattr(SERVICES[method.service], method.name).__wrapped__
        names = list(inspect.signature(wrapped).parameters)[2:]
        session = None
        if method.needs_session:
            session, args = args[0], args[1:]  # the service finds the session from its token
        bound = dict(zip(names, args, strict=False)) | kwargs
        for name in method.own_session:
            session = bound.pop(name)
        if method.spread is not None:  # keywords the method gathers with **: sent as one dict
            named = {n for n, _ in method.params}
            bound = {k: v for k, v in bound.items() if k in named} | {
                method.spread: {k: v for k, v in bound.items() if k not in named}}
        # (a progress callback stays here: the answer comes when the work is done)
        sent = {name: encode(bound[name], secrets=True) for name, hint in method.params
                if name in bound and not callable(bound[name]) and hint != FILES}
        files = next(((name, bound[name]) for name, hint in method.params if hint == FILES and name in bound),
                     None)
        body = {"token": self.token_of(session), "args": sent}
        result = self.channel.request("POST", f"/v1/call/{method.service}/{method.name}", body, files)
        return result if isinstance(result, bytes) else decode(result, method.returns)

    def spooled(self, route: str, out: Path, kind: type[Any], body: dict[str, Any],
                done: Callable[[Any], str]) -> Any:
        """A file the service makes in its spool (media, a backup), fetched into ``out``, which
        exists only once it arrived whole."""
        with OutputFile(out) as output:  # refuses an existing name before anything is made
            made = self.channel.request("POST", route, body)
            result = decode(made["made"], kind)
            try:
                self.channel.fetch(f"/v1/media/{made['media']}", output.file)
                if output.sha256()[0] != result.sha256:
                    raise CustodianError("The file arrived damaged.")
                output.publish()
            except CustodianError as exc:
                raise CustodianError(f"{done(result)}, but it could not be fetched from the workstation "
                                     f"service: {exc}") from None
        return result

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
        policy: SitePolicy = decode(self.station()["policy"], SitePolicy)
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
        self.reading.close()
        self.channel.close()

    def __enter__(self) -> RemoteVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

