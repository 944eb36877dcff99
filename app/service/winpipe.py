r"""The service's side of the named pipe on Windows (written, not tested here).

The same uvicorn HTTP/1.1 protocol and Starlette application as on the Unix socket, served on
``\\.\pipe\NAME`` by asyncio's Proactor loop. asyncio's own pipe server makes every instance with
the default security (anyone may read, and open further instances of the name); this one makes
each with a descriptor that admits the service's account, SYSTEM and the allowed group only,
denies network logons and remote clients, and makes the first with FILE_FLAG_FIRST_PIPE_INSTANCE,
so a process that took the name before the service started is never served under it.

Each connection's account is read from its token (:func:`app.service.winpipe_api.client_identity`)
before a byte reaches the application, and travels with the transport as ``peer_sid``, where the
Unix socket's transport carries the socket that SO_PEERCRED reads. The application then asks
:class:`PipeAdmission` as it asks :class:`app.service.server.Admission` on Unix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import uvicorn

from app.errors import UsageError
from app.service import winpipe_api as api
from app.service.winpipe_api import CLIENT_ACCESS, NOT_HERE, SYSTEM, checked_sid, pipe_address

log = logging.getLogger("custodian.service")

FIRST_BYTES = 30.0  # seconds a client has to send its request once connected
RETRY = 1.0  # seconds between tries to make another instance (out of resources)


def security_descriptor(service_sid: str, group_sid: str | None) -> str:
    """The pipe's descriptor (SDDL): owned by the service's account, so a client can tell the real
    pipe from a squatter's; network logons denied before anything is granted; everything for the
    service (which makes the further instances) and SYSTEM; for the group, what a client asks and
    nothing more (no FILE_CREATE_PIPE_INSTANCE). Protected: nothing inherited."""
    owner = checked_sid(service_sid)
    entries = ["(D;;GA;;;NU)", "(A;;GA;;;SY)"]
    if owner != SYSTEM:
        entries.append(f"(A;;GA;;;{owner})")
    if group_sid is not None:
        entries.append(f"(A;;{CLIENT_ACCESS:#x};;;{checked_sid(group_sid)})")
    return f"O:{owner}D:P{''.join(entries)}"


@dataclass
class PipeAdmission:
    """Which Windows accounts may talk to the service: its own, SYSTEM, and those whose token holds
    the allowed group (enabled, not deny-only). The pipe's descriptor refuses the others at the
    door; this is the application's second question, answered from what each connection's token
    said (a later connection of the same account with fewer groups makes the answer no)."""

    service_sid: str
    group_sid: str | None
    _member: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def for_group(cls, group: str | None) -> PipeAdmission:
        """The service's own account, and the local group named ``group`` (None: nobody else)."""
        if sys.platform != "win32":
            raise UsageError(NOT_HERE)
        return cls(api.own_sid(), api.account_sid(group, group=True) if group else None)

    def identified(self, sid: str, member: bool) -> None:
        self._member[sid] = member

    def admits(self, peer: object) -> bool:
        if not isinstance(peer, str):
            return False  # a Unix uid: never on a pipe
        return peer in (self.service_sid, SYSTEM) or (self.group_sid is not None
                                                      and self._member.get(peer, False))


class PipeServer(uvicorn.Server):
    r"""uvicorn serving on the service's named pipe instead of sockets: ``PipeServer(config,
    r"\\.\pipe\custodian", admission).run()``. The config's protocol must read ``peer_sid``."""

    def __init__(self, config: uvicorn.Config, address: str, admission: PipeAdmission) -> None:
        if sys.platform != "win32":
            raise UsageError(NOT_HERE)
        super().__init__(config)
        self.address = pipe_address(address)
        self.admission = admission

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan, and no listener of uvicorn's own
        if sys.platform != "win32":  # (refused in __init__ already)
            raise UsageError(NOT_HERE)
        else:  # (a block of its own: mypy off Windows skips it)
            loop = asyncio.get_running_loop()
            if not isinstance(loop, asyncio.ProactorEventLoop):
                raise UsageError("The named pipe needs asyncio's Proactor loop (uvicorn's loop 'asyncio' or "
                                 "'auto').")
            protocol = self.config.http_protocol_class
            factory = partial(protocol, config=self.config,  # type: ignore[call-arg]
                              server_state=self.server_state, app_state=self.lifespan.state)
            listener = _Listener(loop, self.address, self.admission, factory)
            self.servers.append(listener)  # type: ignore[arg-type]  # uvicorn calls close(), wait_closed()


if sys.platform == "win32":
    from asyncio.windows_utils import PipeHandle

    class _Listener:
        """What ``loop.start_serving_pipe`` does, with the pipe's security and the client's
        identity: one instance always waiting, each connected instance identified, then handed to
        a protocol of its own on a duplex pipe transport."""

        def __init__(self, loop: asyncio.ProactorEventLoop, address: str, admission: PipeAdmission,
                     factory: Callable[[], asyncio.Protocol]) -> None:
            self._loop, self._address, self._admission, self._factory = loop, address, admission, factory
            # what loop.start_serving_pipe uses: the loop's IOCP proactor and its pipe transport (not public)
            self._proactor: Any = loop._proactor  # type: ignore[attr-defined]
            transport = loop._make_duplex_pipe_transport  # type: ignore[attr-defined]
            self._transport: Callable[..., asyncio.Transport] = transport
            self._attributes = api.security_attributes(
                security_descriptor(admission.service_sid, admission.group_sid))
            try:
                self._waiting = PipeHandle(api.create_pipe(address, self._attributes, first=True))
            except OSError as exc:
                raise UsageError(f"The pipe {address} cannot be made ({exc.strerror}): another process may "
                                 "already serve that name; stop it, or give this service another --socket.") \
                    from None
            self._accepting: asyncio.Future[PipeHandle] | None = None
            self._admitting: set[asyncio.Task[None]] = set()
            self._task = loop.create_task(self._accept())

        async def _accept(self) -> None:
            while True:
                pipe = self._waiting
                try:
                    self._accepting = self._proactor.accept_pipe(pipe)
                    await self._accepting
                    connected = True
                except OSError:  # the client came and went before it was accepted
                    connected = False
                # the next instance before this one leaves the waiting place: the name never lapses
                self._waiting = await self._another()
                if not connected:
                    pipe.close()
                    continue
                task = self._loop.create_task(self._admit(pipe))
                self._admitting.add(task)
                task.add_done_callback(self._admitting.discard)

        async def _another(self) -> PipeHandle:
            while True:
                try:
                    return PipeHandle(api.create_pipe(self._address, self._attributes, first=False))
                except OSError as exc:
                    log.error("the pipe cannot take another client yet (%s)", exc.strerror)
                    await asyncio.sleep(RETRY)

        async def _admit(self, pipe: PipeHandle) -> None:
            """The request's first bytes (Windows refuses to identify a pipe's client until something
            has been read: ERROR_CANNOT_IMPERSONATE), its account, then the protocol, which is given
            those bytes after connection_made and before anything read later."""
            try:
                first = await asyncio.wait_for(self._proactor.recv(pipe, 65536), FIRST_BYTES)
                if not first:
                    raise ConnectionResetError
                sid, member = api.client_identity(pipe.fileno(), self._admission.group_sid)
            except (OSError, TimeoutError):
                pipe.close()
                return
            except asyncio.CancelledError:  # the service is stopping
                pipe.close()
                raise
            self._admission.identified(sid, member)
            protocol = self._factory()
            self._transport(pipe, protocol, extra={"addr": self._address, "peer_sid": sid})
            self._loop.call_soon(protocol.data_received, first)  # (call_soon keeps order)

        def close(self) -> None:
            if self._accepting is not None:
                self._accepting.cancel()  # cancels the overlapped wait before its handle is closed
            self._task.cancel()
            for task in self._admitting:
                task.cancel()
            self._waiting.close()

        async def wait_closed(self) -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
