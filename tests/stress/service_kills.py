"""kill -9 of the workstation service while its storage SCP receives and a client imports through
its socket, and of a client in the middle of a request; what must hold afterwards:

- every instance the service's SCP acknowledged, and every instance a client was told was
  imported, is in the vault, intact;
- the vault and the audit chain verify after every kill (checked from this process, which keeps
  the vault open beside the service, as a second program on the station would);
- a client killed mid-request leaves the service answering the next client.

The CI subset (tests/stress/test_kills.py) and the long runner (tests/stress/run.py) share this.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.demo.studies import Patient, ct_study
from app.net.nodes import Node
from app.security.roles import Role
from app.security.sealing import KeyFileSealer
from app.vault import Vault
from tests.conftest import ADMIN_PASSWORD, REPO, Account, Codes, VaultEnv, write_study
from tests.peers.ports import free_port, wait_listening
from tests.stress.kills import SENDER_AE, Station, Tally, _kill, _Sender


class ServiceStation(Station):
    """A service vault (key file), its service as the victim, clients as subprocesses."""

    def __init__(self, home: Path) -> None:  # (no passphrase vault: the service refuses those)
        vault, enrolment = Vault.create(home, admin="admin", password=ADMIN_PASSWORD, passphrase=None,
                                        sealer=KeyFileSealer())
        self.env = VaultEnv(home, vault)
        codes = Codes(enrolment.totp_secret)
        self.env.accounts["admin"] = Account("admin", Role.ADMIN, ADMIN_PASSWORD, codes)
        self.home = home
        self.env.add("tech", Role.TECHNOLOGIST)
        self.socket = home.parent / "run" / "custodian.sock"
        self.port = free_port()
        admin = self.env.login("admin")
        self.vault.admin.set_policy(admin, "scp_port", str(self.port))
        self.vault.nodes.add(admin, Node("killsender", SENDER_AE, "127.0.0.1", 104))
        self.process_env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
        self.process_env["XDG_STATE_HOME"] = str(home.parent / "client-state")  # the client's token
        self._tokens: dict[str, str] = {}

    def serve(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "app", "service", "--home", str(self.home),
                                    "--socket", str(self.socket)], cwd=REPO, env=self.process_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL)
        wait_listening(process, self.port, Path(os.devnull), "custodian service", timeout=60)
        while not self.socket.exists():
            time.sleep(0.05)
        return process

    def client(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "app", "--json", *args], cwd=REPO,
                                env={**self.process_env, "CUSTODIAN_SOCKET": str(self.socket), **env},
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def log_in_client(self, name: str) -> None:
        account = self.env.accounts[name]
        login = self.client("login", CUSTODIAN_USER=name, CUSTODIAN_PASSWORD=account.password,
                            CUSTODIAN_TOTP=account.codes.next())
        assert login.wait(60) == 0


def kill_service(station: ServiceStation, work: Path, iterations: int, rng: random.Random,
                 slices: int = 40) -> Tally:
    tally = Tally("workstation service (custodian service) receiving and importing")
    started = time.perf_counter()
    service = station.serve()
    station.log_in_client("tech")  # once: the session outlives the service's restarts
    whole = 0.0
    try:
        for i in range(iterations + 1):
            datasets = ct_study(Patient(f"KILL-V{i}", "Killed^Service"), slices=slices, size=128)
            folder = write_study(work / f"service-import{i}", Patient(f"KILL-W{i}", "Killed^Client"),
                                 slices=slices, size=128)[0].parent
            clock = time.perf_counter()
            sender = _Sender(station.port, datasets)
            sender.start()
            importer = station.client("import", str(folder))
            if i == 0:  # the calibration: both finish, then a graceful stop
                sender.join()
                importer.wait(120)
                whole = time.perf_counter() - clock
                service.send_signal(signal.SIGTERM)
                service.wait(30)
            else:
                sender.first_stored.wait(30)
                if not _kill(service, rng.uniform(0, whole)):
                    tally.finished += 1
                sender.join(60)
                tally.kills += 1
            told = json.loads(importer.communicate(timeout=120)[0] or b"{}").get("imported", 0)
            acknowledged = set(sender.acknowledged)
            station.recover()
            stored = station.instances(str(datasets[0].StudyInstanceUID))
            imported = station.instances(_study(folder))
            tally.acknowledged += len(acknowledged) + told
            tally.mid_work += 0 < len(acknowledged) < slices
            if acknowledged - stored or len(imported) < told:
                tally.lost += len(acknowledged - stored) + max(0, told - len(imported))
                tally.found(f"acknowledged or imported instances missing after kill {i}")
            station.check(tally)
            service = station.serve()
        _kill_a_client(station, work, tally)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
    tally.seconds = time.perf_counter() - started
    return tally


def _kill_a_client(station: ServiceStation, work: Path, tally: Tally) -> None:
    """A client killed while its import is on the wire: the service answers the next one."""
    folder = write_study(work / "client-killed", Patient("KILL-C", "Killed^Midrequest"), slices=60,
                         size=256)[0].parent
    importer = station.client("import", str(folder))
    time.sleep(0.3)
    importer.send_signal(signal.SIGKILL)
    importer.wait()
    tally.kills += 1
    asked = station.client("whoami")
    if asked.wait(60) != 0:
        tally.found("the service did not answer after a client was killed mid-request")
        tally.lost += 1
    station.check(tally)


def _study(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
