r"""The clients' side of the named pipe on Windows (written, not tested here).

The same HTTP/1.1 client as on the Unix socket (the standard library's ``http.client``), over a
handle on ``\\.\pipe\NAME`` instead of a socket. Before a byte is sent the pipe's owner is checked
against the service's account: a process that made the pipe before the service started (or in its
absence) would otherwise collect the passwords and authenticator codes typed here.
"""

from __future__ import annotations

import http.client
import io
import socket
import sys
from typing import TYPE_CHECKING, cast

from app.errors import CustodianError, NotPermitted, UsageError
from app.service import winpipe_api as api
from app.service.winpipe_api import (
    ERROR_ACCESS_DENIED,
    ERROR_FILE_NOT_FOUND,
    ERROR_PIPE_BUSY,
    ERROR_SEM_TIMEOUT,
    NOT_HERE,
    SERVICE_ACCOUNT,
    pipe_address,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

WAIT = 10.0  # seconds to wait for a free instance of a busy pipe


class _Reader(io.RawIOBase):
    """One response's reads of the pipe; closing it leaves the pipe open, as a socket's makefile
    does (the connection is kept for the next request)."""

    def __init__(self, pipe: io.RawIOBase) -> None:
        super().__init__()
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        return self._pipe.readinto(buffer)


class PipeSocket:
    """What ``http.client`` uses of a socket (sendall, makefile, close), over a connected pipe."""

    def __init__(self, pipe: io.RawIOBase) -> None:
        self._pipe = pipe

    def sendall(self, data: ReadableBuffer) -> None:
        view = memoryview(data).cast("B")
        while view:
            written = self._pipe.write(view)
            if not written:
                raise BrokenPipeError("the workstation service stopped reading")
            view = view[written:]

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self._pipe))

    def close(self) -> None:
        self._pipe.close()


def refusal(error: int | None, address: str) -> CustodianError:
    """Why the pipe could not be opened, as the contract's one sentence: exit 3 for an account the
    pipe refuses, 1 for no service."""
    if error == ERROR_ACCESS_DENIED:
        return NotPermitted(f"This Windows account may not connect to the workstation service at {address} "
                            "(it is not in the service's group).")
    if error in (ERROR_PIPE_BUSY, ERROR_SEM_TIMEOUT):
        return CustodianError(f"The workstation service at {address} had no free connection within "
                              f"{WAIT:.0f} seconds.")
    why = "no such pipe" if error == ERROR_FILE_NOT_FOUND else f"Windows error {error}"
    return CustodianError(f"No workstation service answers at {address} ({why}).")


def open_pipe(address: str, account: str = SERVICE_ACCOUNT) -> io.RawIOBase:
    """The service's pipe, opened for reading and writing, once its owner is known to be ``account``."""
    if sys.platform != "win32":
        raise UsageError(NOT_HERE)
    else:  # (a block of its own: mypy off Windows skips it)
        import msvcrt
        import os

        try:
            handle = api.open_client(address, WAIT)
        except OSError as exc:
            raise refusal(exc.winerror, address) from None
        try:
            owner, expected = api.pipe_owner(handle), api.account_sid(account)
        except (OSError, UsageError):
            api.close_handle(handle)
            raise
        if owner != expected:
            api.close_handle(handle)
            raise CustodianError(f"The pipe {address} is not the workstation service's: another account "
                                 f"({owner}) made it, not {account}. Nothing was sent; tell the site's "
                                 "administrator.")
        return io.FileIO(msvcrt.open_osfhandle(handle, os.O_RDWR | os.O_BINARY), "r+b")


class PipeConnection(http.client.HTTPConnection):
    """An HTTP connection to the service over its pipe (opened at the first request)."""

    def __init__(self, address: str, account: str = SERVICE_ACCOUNT) -> None:
        super().__init__("localhost")
        self.address = pipe_address(address)
        self.account = account

    def connect(self) -> None:
        # http.client uses only sendall, makefile and close of its socket
        self.sock = cast(socket.socket, PipeSocket(self.opened()))

    def opened(self) -> io.RawIOBase:
        return open_pipe(self.address, self.account)
