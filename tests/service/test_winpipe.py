r"""The Windows named pipe: what can be checked honestly on Linux.

Checked here: the pipe's name from the ``--socket`` value, the security descriptor written for
given accounts, who the service admits from what a token said, the client's sentences and exit
codes for a pipe it cannot open, that off Windows both sides refuse plainly, and the client's HTTP
over a plain file handle — against the real service, with the one Windows step (CreateFile on
``\\.\pipe\NAME`` and the owner check) replaced by opening its Unix socket as a file.

Written, not tested here (no Windows machine): making the pipe with that descriptor, the Proactor
accept loop, reading the client's account from its token (ImpersonateNamedPipeClient,
CheckTokenMembership), CreateFile with identification-only impersonation and WaitNamedPipe, and
the owner check against the service's account (GetSecurityInfo, LookupAccountName).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import uvicorn
from uvicorn.server import ServerState

from app.errors import CustodianError, NotPermitted, UsageError
from app.service import client
from app.service.client import RemoteVault
from app.service.server import PeerProtocol, application
from app.service.winpipe import PipeAdmission, PipeServer, security_descriptor
from app.service.winpipe_api import (
    CLIENT_ACCESS,
    ERROR_ACCESS_DENIED,
    ERROR_FILE_NOT_FOUND,
    ERROR_PIPE_BUSY,
    ERROR_SEM_TIMEOUT,
    FILE_CREATE_PIPE_INSTANCE,
    SYSTEM,
    is_pipe,
    pipe_address,
)
from app.service.winpipe_client import PipeConnection, open_pipe, refusal
from tests.conftest import VaultEnv, write_study
from tests.service.test_rpc import served  # noqa: F401  (the real service on a Unix socket)

SERVICE = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"  # a service's (TrustedInstaller)
GROUP = "S-1-5-21-1004336348-1177238915-682003330-1013"
USER = "S-1-5-21-1004336348-1177238915-682003330-1001"
OUTSIDER = "S-1-5-21-1004336348-1177238915-682003330-1002"


@pytest.mark.parametrize(("given", "address"), [
    ("main", r"\\.\pipe\custodian-main"),
    ("reading-room.2", r"\\.\pipe\custodian-reading-room.2"),
    (r"\\.\pipe\custodian", r"\\.\pipe\custodian"),  # the installer's (install-service.ps1)
    ("//./PIPE/custodian", r"\\.\pipe\custodian"),
])
def test_the_pipe_is_named_from_the_socket_option(given: str, address: str) -> None:
    assert pipe_address(given) == address
    assert is_pipe(address)


@pytest.mark.parametrize("given", [
    r"\\pacs.hospital\pipe\custodian",  # another machine's pipe: the password would travel there
    r"\\.\pipe\..\custodian", "../custodian", "reading room", "", "-main", "x" * 65,
])
def test_a_remote_pipe_or_a_name_that_is_no_instance_is_refused(given: str) -> None:
    with pytest.raises(UsageError, match="names no local pipe"):
        pipe_address(given)
    assert not is_pipe(given)


def test_a_unix_socket_path_is_no_pipe() -> None:
    assert not is_pipe("/run/custodian/custodian.sock")


def test_the_pipe_admits_the_service_system_and_the_group_and_denies_network_logons() -> None:
    sddl = security_descriptor(SERVICE, GROUP)
    assert sddl == (f"O:{SERVICE}D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;{SERVICE})(A;;0x120083;;;{GROUP})")
    assert security_descriptor(SYSTEM, None) == "O:S-1-5-18D:P(D;;GA;;;NU)(A;;GA;;;SY)"


def test_a_member_may_read_and_write_but_not_serve_the_pipe() -> None:
    """GENERIC_WRITE would bring FILE_CREATE_PIPE_INSTANCE: a member could then serve further
    instances of the service's pipe and collect the others' passwords."""
    assert CLIENT_ACCESS & FILE_CREATE_PIPE_INSTANCE == 0


@pytest.mark.parametrize(("service", "group"), [
    (SERVICE, f"{GROUP})(A;;GA;;;WD"),  # would add "everyone: everything"
    ("Custodian", GROUP), (SERVICE, "S-1-5-21-x"),
])
def test_a_malformed_sid_never_reaches_the_descriptor(service: str, group: str) -> None:
    with pytest.raises(UsageError, match="not a Windows security identifier"):
        security_descriptor(service, group)


def test_admission_follows_what_each_connection_token_said() -> None:
    admission = PipeAdmission(SERVICE, GROUP)
    assert admission.admits(SERVICE) and admission.admits(SYSTEM)
    assert not admission.admits(USER)  # not yet seen on a connection
    admission.identified(USER, member=True)
    assert admission.admits(USER)
    admission.identified(USER, member=False)  # a later token without the group (or deny-only)
    assert not admission.admits(USER)
    assert not admission.admits(1000)  # a Unix uid never comes over a pipe


def test_without_a_group_only_the_service_and_system_are_admitted() -> None:
    admission = PipeAdmission(SERVICE, None)
    admission.identified(USER, member=True)
    assert not admission.admits(USER)
    assert admission.admits(SERVICE) and admission.admits(SYSTEM)


@pytest.mark.parametrize(("error", "kind", "exit_code", "says"), [
    (ERROR_ACCESS_DENIED, NotPermitted, 3, "not in the service's group"),
    (ERROR_FILE_NOT_FOUND, CustodianError, 1, "No workstation service answers at .* \\(no such pipe\\)"),
    (ERROR_PIPE_BUSY, CustodianError, 1, "had no free connection within 10 seconds"),
    (ERROR_SEM_TIMEOUT, CustodianError, 1, "had no free connection"),
    (1450, CustodianError, 1, "No workstation service answers at .* \\(Windows error 1450\\)"),
])
def test_a_pipe_that_cannot_be_opened_is_one_sentence_and_the_contracts_exit_code(
        error: int, kind: type[CustodianError], exit_code: int, says: str) -> None:
    refused = refusal(error, r"\\.\pipe\custodian")
    assert type(refused) is kind and refused.exit_code == exit_code
    assert re.search(says, str(refused)) and "\n" not in str(refused)


def test_off_windows_both_sides_refuse_plainly() -> None:
    with pytest.raises(UsageError, match="on this system the service listens on a Unix socket"):
        PipeAdmission.for_group("Custodian Users")
    with pytest.raises(UsageError, match="Unix socket"):
        PipeServer(uvicorn.Config(app=None), "main", PipeAdmission(SERVICE, GROUP))
    with pytest.raises(UsageError, match="Unix socket"):
        open_pipe(r"\\.\pipe\custodian")
    with pytest.raises(UsageError, match="Unix socket"):
        PipeConnection("main").connect()


class SocketAsPipe(PipeConnection):
    """The pipe client with its one Windows step replaced: the service's Unix socket opened as a
    plain file handle, which is what CreateFile gives on Windows."""

    opens: ClassVar[list[str]] = []  # by thread

    def __init__(self, path: Path) -> None:
        super().__init__("test")
        self.path = path

    def opened(self) -> io.RawIOBase:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.path))
        self.opens.append(threading.current_thread().name)
        return io.FileIO(sock.detach(), "r+b")


def test_the_client_speaks_http_to_the_real_service_over_a_file_handle(
        served: Path,  # noqa: F811  (the fixture imported above)
        env: VaultEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Log in, import (multipart uploads of 512 KiB files), read back every image (binary answers
    larger than any buffer) and a refusal, each thread on one kept-alive handle: what the pipe
    carries."""
    monkeypatch.setattr(client, "UnixConnection", SocketAsPipe)
    monkeypatch.setattr(SocketAsPipe, "opens", [])
    remote = RemoteVault(served)
    account = env.accounts["tech"]
    _, session = remote.accounts.login(account.name, account.password, account.codes.next())
    report = remote.intake.import_paths(session, write_study(tmp_path / "in", slices=4, size=512))
    assert report.imported == 4 and not report.rejected
    study = remote.reading.studies(session)[0].study_uid
    series = remote.reading.series(session, study)[0].series_uid
    images = remote.reading.open_series(session, series)
    embedded = env.vault.reading.open_series(env.login("tech"), series)
    assert len(images) == len(embedded) == 4
    for i in range(4):
        assert images.raw(i).nbytes >= 512 * 512 * 2
        assert (images.raw(i) == embedded.raw(i)).all()
    with pytest.raises(UsageError, match="does not offer that"):
        remote.channel.request("POST", "/v1/call/nothing/here", {"token": None, "args": {}})
    assert remote.station()["mode"] == "service"
    # one handle per thread (the viewer reads ahead on its own) for all its requests: never reopened
    assert "MainThread" in SocketAsPipe.opens and len(set(SocketAsPipe.opens)) == len(SocketAsPipe.opens)
    remote.close()


class PipeLikeTransport(asyncio.Transport):
    """What the pipe's transport shows uvicorn: no socket, the client's SID as ``peer_sid``."""

    def __init__(self, sid: str) -> None:
        super().__init__({"peer_sid": sid, "addr": r"\\.\pipe\custodian"})
        self.out, self.closed = bytearray(), False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _ask(config: uvicorn.Config, sid: str, path: str, body: dict[str, object]) -> tuple[int, dict]:
    protocol = PeerProtocol(config=config, server_state=ServerState(), app_state={})
    transport = PipeLikeTransport(sid)
    protocol.connection_made(transport)
    payload = json.dumps(body).encode()
    protocol.data_received(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    while not transport.closed:
        await asyncio.sleep(0.01)
    head, _, answer = bytes(transport.out).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(answer)


def test_a_pipe_clients_sid_is_its_identity_and_binds_its_session(env: VaultEnv) -> None:
    admission = PipeAdmission(SERVICE, GROUP)
    admission.identified(USER, member=True)
    admission.identified(OUTSIDER, member=False)
    config = uvicorn.Config(application(env.vault, admission, locked=lambda: None), http=PeerProtocol,
                            lifespan="off", log_level="warning")
    config.load()
    rad = env.accounts["rad"]
    login = {"token": None, "args": {"name": "rad", "password": rad.password, "code": rad.codes.next()}}

    async def exchange() -> None:
        status, refused = await _ask(config, OUTSIDER, "/v1/call/accounts/login", login)
        assert status == 403 and refused["message"] == "This OS account may not use the workstation service."
        status, answer = await _ask(config, USER, "/v1/call/accounts/login", login)
        assert status == 200
        whoami = {"token": answer["result"][0], "args": {}}
        assert (await _ask(config, USER, "/v1/call/accounts/whoami", whoami))[0] == 200
        status, other = await _ask(config, SERVICE, "/v1/call/accounts/whoami", whoami)  # same token
        assert status == 403 and "another OS account" in other["message"]

    asyncio.run(exchange())
