"""`custodian service`: the one process that opens the vault, holds its keys and does the
always-on work (storage SCP, audit forwarding, PACS watch and outbox, cache budget), serving the
GUI and CLI of the allowed group over a Unix socket.

It unlocks without a person: the master key is sealed in a PKCS#11 token or a key file only the
service account reads (``init --service``). A vault whose key a person holds (passphrase, a
user's keyring) is refused: a service that needed a person's secret would put it back within an
operator's reach. When the key cannot be had (the token is gone) the service stays up, locked,
answers every client with the reason, tries again, and records a security alert once it can.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import uvicorn

from app.audit.repository import sync_job
from app.background import Periodic, Step
from app.errors import CustodianError, UsageError, VaultLocked
from app.net.scp import StorageScp
from app.net.watch import PacsStatus, pacs_job
from app.security.keys import KeyStore
from app.security.sealing import SEALED_MODES
from app.service.server import Admission, Admits, PeerProtocol, application
from app.vault import Vault

if sys.platform != "win32":
    import grp

log = logging.getLogger("custodian.service")

UNLOCK_RETRY = 5.0  # seconds between tries while the key token is absent
EVICT_INTERVAL = 600.0
AUDIT_CHECK_INTERVAL = 3600.0  # so a patient's access report walks at most an hour of new records
# A client's idle connection is kept this long, so that a request is rarely sent on one the service
# has just closed (the client then sends it again, which for a request already carried out would
# repeat it).
KEEP_ALIVE = 3600


def listen(path: Path, group: str | None) -> socket.socket:
    """The service's socket: read and write for the service and its group only (0660), made so
    that it never exists with wider permissions, even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a service that died; nothing listens on it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(previous)
    if group:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError):
            sock.close()
            raise UsageError(f"The socket cannot be given to the group {group}: it does not exist, or this "
                             "account is not a member of it.") from None
        os.chmod(path, 0o660)
    sock.listen(128)
    return sock


@dataclass
class Station:
    """The open vault and the work the service keeps running for it."""

    home: Path
    vault: Vault | None = None
    locked_since: float | None = None
    why_locked: str | None = None
    jobs: list[Periodic] = field(default_factory=list)
    scp: StorageScp | None = None
    pacs: PacsStatus | None = None  # what the last PACS check found, for the clients' banner

    def unlock(self) -> bool:
        """Open the vault with the sealed key; False (and the reason kept) while it cannot be had."""
        try:
            vault = Vault.open(self.home, lambda: None)
        except VaultLocked as exc:
            if self.locked_since is None:
                self.locked_since = time.time()
                log.error("The workstation service is locked: %s", exc)
            self.why_locked = f"The workstation service is locked: {exc}"
            return False
        self.vault = vault
        if self.locked_since is not None:  # now that the trail can be written
            vault.security_alert("the workstation service could not unlock its vault (key token absent)",
                                 since=self.locked_since, until=time.time())
        self.locked_since = self.why_locked = None
        return True

    def locked(self) -> str | None:
        return self.why_locked if self.vault is None else None

    def start_work(self) -> None:
        vault = self.vault
        assert vault is not None
        vault.trail.record_application(started=True)
        self.jobs = [sync_job(partial(vault.trail.forwarder, own_connection=True)),
                     Periodic("cache-budget", partial(_evicting, vault), interval=EVICT_INTERVAL),
                     Periodic("audit-check", partial(_checking, vault), interval=AUDIT_CHECK_INTERVAL)]
        if not vault.read_only:
            self.jobs.append(pacs_job(vault.watch_pacs, self.watched))
            self.scp = _storage_scp(vault)
        for job in self.jobs:
            job.start()

    def watched(self, status: PacsStatus) -> None:
        if status.error:
            log.info("PACS %s does not answer: %s", status.node, status.error)
        self.pacs = status

    def stop_work(self) -> None:
        if self.scp is not None:
            self.scp.stop()
        for job in self.jobs:
            job.stop()
        if self.vault is not None:
            self.vault.trail.record_application(started=False)
            self.vault.close()


def run(home: Path, socket_path: Path, group: str | None) -> int:
    """Serve until SIGTERM or SIGINT."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="custodian service: %(message)s")
    if not Vault.exists(home):
        raise UsageError(f"No vault in {home}: create it with 'custodian init --service' as this account.")
    if KeyStore.load(home).mode not in SEALED_MODES:
        raise UsageError("This vault's master key is held by a person (passphrase or keyring): a service "
                         "vault is made by 'custodian init --service' as the service's account.")
    station = Station(home)
    if not station.unlock():
        threading.Thread(target=_keep_trying, args=(station,), name="unlock", daemon=True).start()
    else:
        station.start_work()
    if sys.platform == "win32":  # a named pipe, its clients admitted by their tokens (written, not tested)
        from app.service.winpipe import PipeAdmission, PipeServer

        pipe = PipeAdmission.for_group(group)
        server: uvicorn.Server = PipeServer(_config(station, pipe), str(socket_path), pipe)
        sockets: list[socket.socket] = []
    else:
        server, sockets = uvicorn.Server(_config(station, Admission(group))), [listen(socket_path, group)]
    log.info("serving on %s (group %s); master key in the %s", socket_path, group or "none",
             station.vault.key_mode if station.vault else "token, not present")
    # uvicorn stops gracefully on SIGTERM and SIGINT, then raises the signal again for the handler it
    # found: ours ends the process normally, through the clean-up below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    try:
        server.run(sockets=sockets)
    except SystemExit:
        pass
    finally:
        with contextlib.suppress(OSError):
            socket_path.unlink()
        station.stop_work()
    return 0


def _config(station: Station, admission: Admits) -> uvicorn.Config:
    return uvicorn.Config(
        application(_vault_of(station), admission, locked=station.locked, pacs=lambda: station.pacs),
        http=PeerProtocol, lifespan="off", log_level="warning", access_log=False,
        timeout_graceful_shutdown=10, timeout_keep_alive=KEEP_ALIVE)


def _stopped(sig: int, _frame: object) -> None:
    raise SystemExit(0)


class _LateVault:
    """The vault once the service has unlocked it (the socket is served from the start)."""

    def __init__(self, station: Station) -> None:
        self._station = station

    def __getattr__(self, name: str) -> object:
        vault = self._station.vault
        if vault is None:
            raise CustodianError(self._station.why_locked or "The workstation service is starting.")
        return getattr(vault, name)


def _vault_of(station: Station) -> Vault:
    return station.vault if station.vault is not None else _LateVault(station)  # type: ignore[return-value]


def _keep_trying(station: Station) -> None:
    while not station.unlock():
        time.sleep(UNLOCK_RETRY)
    station.start_work()


def _storage_scp(vault: Vault) -> StorageScp | None:
    try:
        scp = vault.pacs.storage_scp()
    except UsageError:
        return None  # no PACS nodes yet: nobody could send
    try:
        scp.start()
    except OSError as exc:
        scp.stop()
        log.error("receiving is off: port %s cannot be used (%s)", scp.port, exc.strerror or exc)
        return None
    log.info("storage SCP listening on %s port %s", scp.host, scp.port)
    for notice in scp.notices(vault.policy.require_tls):
        log.info("%s", notice)
    return scp


def _checking(vault: Vault) -> Step:
    def step(stop: threading.Event) -> str | None:
        try:
            chain = vault.trail.check_new_records()
        except CustodianError as exc:  # (a read-only vault, a full disk: tried again later)
            return str(exc)
        if not chain.ok:
            log.error("the audit trail does not verify from record %s: run 'custodian audit verify'",
                      chain.first_bad_seq)
        return None
    return step


def _evicting(vault: Vault) -> Step:
    def step(stop: threading.Event) -> str | None:
        try:
            vault.cache.evict()
        except CustodianError as exc:
            return str(exc)
        return None
    return step
