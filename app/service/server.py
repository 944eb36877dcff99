"""The service's side of the socket: HTTP/1.1 over a Unix socket (uvicorn, Starlette).

Who is calling is what the kernel says (SO_PEERCRED on the connection), never what a request
claims: the OS account is read once per connection and every session is bound to it. The socket
file admits only the service's group; the account is checked against that group again here, so a
socket left with wider permissions still admits nobody else.

One route carries every call: ``POST /v1/call/{service}/{method}`` with ``{"token", "args"}``,
answered ``{"result"}`` or ``{"error", "message", "exit_code"}`` — the same plain sentences and exit
codes as in embedded mode. Requests are bounded in size; an unexpected failure is answered without
its message (it may quote data) and logged by type only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import socket
import struct
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from functools import partial
from typing import Any, Protocol

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import errors
from app.audit.reconcile import Reconciliation
from app.errors import CustodianError, NotAuthenticated, NotPermitted, UsageError, VaultLocked
from app.net.watch import PacsStatus
from app.security.accounts import Enrolment
from app.security.sessions import PeerId
from app.service.codec import BINARY, decode, encode
from app.service.methods import LOCK_SCREEN, METHODS, OFFERED, PEER, Method
from app.service.parts import FILES, joined, read_form
from app.service.spool import Spool
from app.vault import Vault

if sys.platform != "win32":  # (a pipe's clients are admitted by app.service.winpipe)
    import grp
    import pwd

log = logging.getLogger("custodian.service")

MAX_LINE = 1024 * 1024  # one syslog message of the repository's file
MAX_REQUEST = 192 * 1024 * 1024  # an import batch (64 MiB of files, base64) with room to spare
SEND_BUFFER = 4 * 1024 * 1024  # asked of the kernel, which caps it at net.core.wmem_max
STATUS = {2: 400, 3: 403, 4: 409, 5: 207}

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def peer_uid(sock: socket.socket) -> int:
    """The OS account at the other end of a Unix socket, as the kernel recorded it at connect."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return int(uid)


class PeerProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, telling the application each connection's OS account."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # a named pipe's transport carries its client's SID (app.service.winpipe); a socket, SO_PEERCRED
        sock = transport.get_extra_info("socket")
        uid = transport.get_extra_info("peer_sid") or peer_uid(sock)
        if sock is not None:  # an image (0.5 MB) in one send, not in turns with the client's reads
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        inner: ASGI = self.app

        async def app(scope: Scope, receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
            scope["peer_uid"] = uid
            await inner(scope, receive, send)

        self.app = app


class Admits(Protocol):
    def admits(self, uid: PeerId) -> bool: ...


class Admission:
    """Which OS accounts may talk to the service: its own, root, and the members of its group."""

    def __init__(self, group: str | None) -> None:
        self._gid = grp.getgrnam(group).gr_gid if group else None

    def admits(self, uid: PeerId) -> bool:
        if isinstance(uid, str):
            return False  # a Windows SID: never on a Unix socket
        if uid in (0, os.getuid()):
            return True
        if self._gid is None:
            return False
        try:
            account = pwd.getpwuid(uid)
        except KeyError:
            return False
        return self._gid in os.getgrouplist(account.pw_name, account.pw_gid)


def application(vault: Vault, admission: Admits, *, locked: Callable[[], str | None],
                pacs: Callable[[], PacsStatus | None] = lambda: None) -> Starlette:
    """The ASGI application around one open vault. ``locked``: why the service cannot serve
    (its key token is gone), or None; ``pacs``: what the service's last PACS check found."""
    issued = Issued()
    spool = Spool(vault)

    def guarded(handler: Callable[[Request, PeerId], Awaitable[Response]], *, when_locked: bool = False
                ) -> Callable[[Request], Awaitable[Response]]:
        """Admission (the caller's OS account), the lock, and errors as plain sentences, once."""
        async def endpoint(request: Request) -> Response:
            uid = request.scope.get("peer_uid")
            try:
                if not isinstance(uid, int | str) or not admission.admits(uid):
                    raise NotPermitted("This OS account may not use the workstation service.")
                why = locked()
                if why is not None and not when_locked:
                    raise VaultLocked(why)
                return await handler(request, uid)
            except CustodianError as exc:
                return _error(exc)
            except Exception as exc:  # the message may quote data: the type only, in the log
                log.error("%s failed unexpectedly: %s", request.url.path, type(exc).__name__)
                return JSONResponse({"error": "Unexpected", "exit_code": 1,
                                     "message": "The workstation service could not complete the request; "
                                                "its log says where."}, status_code=500)
        return endpoint

    async def call(request: Request, uid: PeerId) -> Response:
        method = METHODS.get((request.path_params["service"], request.path_params["method"]))
        if method is None:
            raise UsageError("The workstation service does not offer that.")
        files: dict[str, list[bytes]] = {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            body, files = await read_form(request.headers["content-type"], request.stream(), MAX_REQUEST)
        else:
            body = await _body(request)
        result = await run_in_threadpool(_invoke, vault, issued, method, uid, body, files)
        if isinstance(result, bytes):  # an instance: as it is, not as base64 in JSON
            return Response(result, media_type=BINARY)
        return JSONResponse({"result": result})

    async def spooled(request: Request, uid: PeerId) -> Response:
        """An export or a backup, made in the spool for this client to fetch."""
        body = await _body(request)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise NotAuthenticated("Not logged in.")

        def made() -> dict[str, Any]:
            session = vault.accounts.resume(token, peer_uid=uid)
            make = spool.export if request.url.path == "/v1/export" else spool.backup
            return make(session, uid, body)
        return JSONResponse({"result": await run_in_threadpool(made)})

    async def media(request: Request, uid: PeerId) -> Response:
        path = spool.take(uid, request.path_params["name"])
        return FileResponse(path, media_type=BINARY, background=BackgroundTask(path.unlink, missing_ok=True))

    async def station(request: Request, uid: PeerId) -> Response:
        return JSONResponse({"result": {
            "mode": "service", "key_storage": vault.key_mode, "read_only": vault.read_only,
            "locked": locked(), "policy": encode(vault.policy),
            "managed_settings": sorted(vault.managed_settings)}})

    async def pacs_status(request: Request, uid: PeerId) -> Response:
        """For the clients' downtime banner: no patient data, so no session needed."""
        return JSONResponse({"result": encode(pacs())})

    return Starlette(routes=[Route("/v1/call/{service}/{method}", guarded(call), methods=["POST"]),
                             Route("/v1/export", guarded(spooled), methods=["POST"]),
                             Route("/v1/backup", guarded(spooled), methods=["POST"]),
                             Route("/v1/media/{name}", guarded(media), methods=["GET"]),
                             Route("/v1/station", guarded(station, when_locked=True), methods=["GET"]),
                             Route("/v1/methods", guarded(_methods, when_locked=True), methods=["GET"]),
                             Route("/v1/pacs", guarded(pacs_status), methods=["GET"]),
                             Route("/v1/reconcile", guarded(partial(_reconcile, vault)), methods=["POST"]),
                             Route("/v1/pixels", guarded(partial(_pixels, vault)), methods=["POST"])])


async def _methods(request: Request, uid: PeerId) -> Response:
    """What a client may call and how (app.service.offer): the API, no data, so no session."""
    return JSONResponse({"result": encode(OFFERED)})


async def _pixels(vault: Vault, request: Request, uid: PeerId) -> Response:
    """A volume's pixels in one answer (:meth:`ReadingService.pixel_stream`): each image decrypted
    as the one before it is sent, instead of a request per image."""
    body = await _body(request)
    token, series_uid, sop_uids = body.get("token"), body.get("series_uid"), body.get("sop_uids")
    if not isinstance(token, str) or not token:
        raise NotAuthenticated("Not logged in.")
    if not isinstance(series_uid, str) or not isinstance(sop_uids, list) or \
            not all(isinstance(u, str) for u in sop_uids):
        raise UsageError("The request names no series and images.")

    def opened() -> Iterator[memoryview]:
        return vault.reading.pixel_stream(vault.accounts.held(token, peer_uid=uid), series_uid, sop_uids)
    return StreamingResponse(await run_in_threadpool(opened), media_type=BINARY)


async def _reconcile(vault: Vault, request: Request, uid: PeerId) -> Response:
    """The repository's file as the client streams it (it may be larger than a request may
    hold in memory), read line by line by the audit reconciliation in a worker thread."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    session = await run_in_threadpool(vault.accounts.resume, token, peer_uid=uid)
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)

    def work() -> Reconciliation:
        try:
            return vault.trail.reconcile(session, _lines(chunks))
        finally:
            while chunks.get() is not None:  # what is left of the body, so the feeder ends
                pass

    async def feed() -> None:
        try:
            async for chunk in request.stream():
                await anyio.to_thread.run_sync(chunks.put, chunk)
        finally:
            await anyio.to_thread.run_sync(chunks.put, None)

    feeding = asyncio.create_task(feed())
    try:
        result = await run_in_threadpool(work)
    finally:
        await feeding  # (ended: the work read the body to its end)
    return JSONResponse({"result": encode(result)})


def _lines(chunks: queue.Queue[bytes | None]) -> Iterator[str]:
    """Text lines from the chunks of a body until its end (None)."""
    rest = b""
    while (chunk := chunks.get()) is not None:
        *whole, rest = (rest + chunk).split(b"\n")
        if len(rest) > MAX_LINE:
            raise UsageError("The repository's file has a line longer than a syslog message may be.")
        yield from (line.decode("utf-8", "replace") for line in whole)
    chunks.put(None)  # (seen again by the drain after the work)
    if rest:
        yield rest.decode("utf-8", "replace")


async def _body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > MAX_REQUEST:
        raise UsageError("The request is larger than the workstation service takes at once.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST:
            raise UsageError("The request is larger than the workstation service takes at once.")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raise UsageError("The request is not JSON.") from None
    if not isinstance(body, dict):
        raise UsageError("The request is not a JSON object.")
    return body


class Issued:
    """Authenticator enrolments the service handed out, by OS account: a client hands one back to
    finish it, and only as it was issued to that account (it cannot choose a secret of its own)."""

    KEPT = 8  # per account

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[PeerId, list[Enrolment]] = {}

    def keep(self, uid: PeerId, enrolment: Enrolment) -> None:
        with self._lock:
            self._by_uid[uid] = [*self._by_uid.get(uid, [])[-(self.KEPT - 1):], enrolment]

    def take(self, uid: PeerId, enrolment: Enrolment) -> Enrolment:
        with self._lock:
            kept = self._by_uid.get(uid, [])
            if enrolment not in kept:
                raise NotPermitted("This authenticator enrolment was not issued to this OS account.")
            kept.remove(enrolment)
            return enrolment


def _invoke(vault: Vault, issued: Issued, method: Method, uid: PeerId, body: dict[str, Any],
            files: dict[str, list[bytes]] | None = None) -> Any:
    """One call, with the caller's own session and its arguments read as the method declares;
    the answer encoded, or raw bytes where the method returns bytes."""
    raw = body.get("args") or {}
    if not isinstance(raw, dict) or set(raw) - {name for name, _ in method.params}:
        raise UsageError("The request names arguments the method does not take.")
    sent = files or {}
    if set(sent) - {name for name, hint in method.params if hint == FILES}:
        raise UsageError("The request sends files for an argument that takes none.")
    args: dict[str, Any] = {
        name: joined(raw.get(name), sent[name]) if name in sent else decode(raw[name], hint)
        for name, hint in method.params if name in raw}
    if method.spread is not None:
        args.update(args.pop(method.spread, {}))
    for name in method.issued:
        if name in args:
            args[name] = issued.take(uid, args[name])
    if method.peer:
        args[PEER] = uid
    target = getattr(getattr(vault, method.service), method.name)
    if method.needs_session or method.own_session:
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise NotAuthenticated("Not logged in.")
        # The gate checks the session's liveness for the call itself; here only whose it is.
        if method.needs_session or (method.service, method.name) in LOCK_SCREEN:
            session = vault.accounts.held(token, peer_uid=uid)
        else:
            session = vault.accounts.resume(token, peer_uid=uid)
        args.update({name: session for name in method.own_session})
        result = target(session, **args) if method.needs_session else target(**args)
    else:
        result = target(**args)
    if isinstance(result, Enrolment):
        issued.keep(uid, result)
    return _answer(result)


def _answer(result: object) -> Any:
    return result if isinstance(result, bytes) else encode(result)


def _error(exc: CustodianError) -> JSONResponse:
    # Named by the nearest class clients know (app.errors), so they raise the same kind.
    kind = next(c for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    return JSONResponse({"error": kind.__name__, "message": str(exc), "exit_code": exc.exit_code},
                        status_code=STATUS.get(exc.exit_code, 422))
