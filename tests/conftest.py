"""Shared fixtures: vaults in temporary homes, users of every role, and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import NotAuthenticated
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.vault import Vault
from tests.peers.softhsm import token  # noqa: F401  (the SoftHSM2 token fixture, for every test)

PASSPHRASE = "test vault passphrase"


def password_for(name: str) -> str:
    """A test password that passes the rules (it must not contain the user name)."""
    return f"long test secret {sum(map(ord, name))} ok"
ADMIN_PASSWORD = "long test secret for the boss"

REPO = Path(__file__).resolve().parent.parent


class Codes:
    """Successive TOTP codes for one secret: the replay guard wants a newer step each login."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.step = int(time.time() // totp.STEP) - 2

    @classmethod
    def of(cls, totp_uri: str) -> Codes:
        """The codes of the otpauth:// URI an enrolment printed."""
        return cls(totp_uri.split("secret=")[1].split("&")[0])

    def next(self) -> str:
        # The verifier accepts the previous step too, which spares a wait for the clock when a test
        # needs a third code; but only in a step's first half, so that a check a slow process makes
        # seconds later still finds it within the window.
        now = time.time()
        now_step = int(now // totp.STEP)
        earliest = now_step - 1 if now - now_step * totp.STEP < totp.STEP / 2 else now_step
        self.step = max(self.step + 1, earliest)
        if self.step > now_step + 1:  # used up the window: wait for the clock
            time.sleep((self.step - 1) * totp.STEP - time.time() + 0.05)
        return totp.current_code(self.secret, at=self.step * totp.STEP)


@dataclass
class Account:
    name: str
    role: Role
    password: str
    codes: Codes


@dataclass
class VaultEnv:
    home: Path
    vault: Vault
    accounts: dict[str, Account] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)

    def login(self, name: str, *, fresh: bool = False) -> Session:
        """A logged-in session for ``name``; reused while it is live (TOTP allows a few per step)."""
        session = self.sessions.get(name)
        if session is not None and not fresh:
            try:
                self.vault.accounts.whoami(session)
                return session
            except NotAuthenticated:
                pass
        a = self.accounts[name]
        session = self.vault.accounts.login(a.name, a.password, a.codes.next())[1]
        self.sessions[name] = session
        return session

    def add(self, name: str, role: Role, full_name: str = "") -> Account:
        admin = self.login("admin")
        password = password_for(name)
        enrolment = self.vault.admin.add_user(admin, name, role, password, full_name)
        account = Account(name, role, password, Codes(enrolment.totp_secret))
        self.accounts[name] = account
        return account


def make_env(home: Path) -> VaultEnv:
    vault, enrolment = Vault.create(home, admin="admin", password=ADMIN_PASSWORD,
                                    passphrase=PASSPHRASE, use_keyring=False)
    env = VaultEnv(home, vault)
    env.accounts["admin"] = Account("admin", Role.ADMIN, ADMIN_PASSWORD, Codes(enrolment.totp_secret))
    return env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[VaultEnv]:
    e = make_env(tmp_path / "home")
    e.add("rad", Role.RADIOLOGIST)
    e.add("tech", Role.TECHNOLOGIST)
    yield e
    e.vault.close()


def study_bytes(patient: Patient | None = None, **kwargs: object) -> list[tuple[str, bytes]]:
    datasets = ct_study(patient or Patient("PID-0001", "Testperson^Quentin"), **kwargs)
    return [(f"mem-{i}", to_bytes(ds)) for i, ds in enumerate(datasets)]


def write_study(folder: Path, patient: Patient | None = None, **kwargs: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (_, data) in enumerate(study_bytes(patient, **kwargs)):
        path = folder / f"IM{i:05d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- the CLI
@dataclass
class Cli:
    home: Path
    env: dict[str, str]

    def __call__(self, *args: str, extra_env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", "--home", str(self.home), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**self.env, **(extra_env or {})}, stdin=subprocess.DEVNULL)

    def json(self, *args: str, extra_env: dict[str, str] | None = None) -> object:
        result = self("--json", *args, extra_env=extra_env)
        assert result.returncode in (0, 4, 5), result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
    env["CUSTODIAN_PASSPHRASE"] = PASSPHRASE
    return Cli(tmp_path / "home", env)


@dataclass
class CliUsers:
    cli: Cli
    codes: dict[str, Codes] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def login(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.cli("login", extra_env={"CUSTODIAN_USER": name,
                                            "CUSTODIAN_PASSWORD": self.passwords[name],
                                            "CUSTODIAN_TOTP": self.codes[name].next()})


@pytest.fixture
def cli_users(cli: Cli) -> CliUsers:
    return make_cli_users(cli)


def make_cli_users(cli: Cli) -> CliUsers:
    """A CLI home with admin, rad (radiologist) and tech (technologist) accounts."""
    users = CliUsers(cli)
    init = cli.json("init", "--admin", "admin", extra_env={"CUSTODIAN_PASSWORD": ADMIN_PASSWORD})
    users.codes["admin"] = Codes.of(init["totp_uri"])
    users.passwords["admin"] = ADMIN_PASSWORD
    assert users.login("admin").returncode == 0
    for name, role in (("rad", "radiologist"), ("tech", "technologist")):
        password = password_for(name)
        added = cli.json("user", "add", name, "--role", role, extra_env={"CUSTODIAN_PASSWORD": password})
        users.codes[name] = Codes.of(added["totp_uri"])
        users.passwords[name] = password
    return users
