"""The trust boundary where the operating system enforces it: the service runs as its own OS account,
clients of the allowed group work exactly per role through the socket, an account outside the group
cannot connect, and nothing of the vault can be read as a client's OS account — not through the
program, not around it with the cryptography libraries.

CI runs as root: the accounts are made here with useradd and removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.demo.studies import Patient
from app.security.roles import Action, Role, permits
from tests.conftest import ADMIN_PASSWORD, Codes, password_for, write_study

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root to create OS accounts (CI runs as root)")


@dataclass
class Station:
    base: Path
    home: Path
    socket: Path
    service: subprocess.Popen[bytes]
    names: dict[str, str]  # role in the test -> OS account
    codes: dict[str, Codes] = field(default_factory=dict)

    def run(self, who: str, *args: str, env: dict[str, str] | None = None, client: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """``custodian ARGS`` as the OS account ``who`` (a client of the socket when ``client``)."""
        account = self.names[who]
        own = self.base / "homes" / account
        clean = {"PATH": "/usr/bin:/bin", "HOME": str(own), "LANG": "C.UTF-8",
                 **({"CUSTODIAN_SOCKET": str(self.socket)} if client else {}), **(env or {})}
        return subprocess.run(["setpriv", f"--reuid={account}", f"--regid={account}", "--init-groups", "--",
                               sys.executable, "-m", "app", *args], capture_output=True, text=True,
                              env=clean, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)

    def login(self, who: str, user: str) -> subprocess.CompletedProcess[str]:
        password = ADMIN_PASSWORD if user == "admin" else password_for(user)
        return self.run(who, "login", env={"CUSTODIAN_USER": user, "CUSTODIAN_PASSWORD": password,
                                           "CUSTODIAN_TOTP": self.codes[user].next()})


def _account(name: str, *groups: str) -> None:
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    *(["--groups", ",".join(groups)] if groups else []), name], check=True)


@pytest.fixture(scope="module")
def station() -> Iterator[Station]:
    tag = f"{os.getpid() % 100000}"
    names = {"service": f"cust-svc{tag}", "reader": f"cust-rd{tag}", "reader2": f"cust-rd2{tag}",
             "outsider": f"cust-out{tag}"}
    group = f"cust-users{tag}"
    subprocess.run(["groupadd", "--system", group], check=True)
    _account(names["service"], group)  # (to give the socket to the group it must be in it, as the unit has)
    _account(names["reader"], group)
    _account(names["reader2"], group)
    _account(names["outsider"])
    base = Path(tempfile.mkdtemp(prefix="custodian-svc-"))
    base.chmod(0o755)
    service = None
    try:
        for account in names.values():
            own = base / "homes" / account
            own.mkdir(parents=True)
            shutil.chown(own, account, account)
            own.chmod(0o700)
        (base / "homes").chmod(0o755)
        home = base / "homes" / names["service"] / "vault"
        run_dir = base / "run"
        run_dir.mkdir()
        shutil.chown(run_dir, names["service"], group)
        run_dir.chmod(0o750)
        sock = run_dir / "custodian.sock"
        partial = Station(base, home, sock, None, names)  # type: ignore[arg-type]
        init = partial.run("service", "--home", str(home), "--json", "init", "--admin", "admin", "--service",
                           env={"CUSTODIAN_PASSWORD": ADMIN_PASSWORD}, client=False)
        assert init.returncode == 0, init.stderr
        assert json.loads(init.stdout)["key_storage"] == "keyfile"
        account = names["service"]
        service = subprocess.Popen(
            ["setpriv", f"--reuid={account}", f"--regid={account}", "--init-groups", "--", sys.executable,
             "-m", "app", "service", "--home", str(home), "--socket", str(sock), "--group", group],
            env={"PATH": "/usr/bin:/bin", "HOME": str(base / "homes" / account)}, cwd=REPO,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert service.poll() is None, service.stderr.read().decode() if service.stderr else ""
            assert time.monotonic() < deadline, "the service did not start listening"
            time.sleep(0.1)
        admin = Codes.of(json.loads(init.stdout)["totp_uri"])
        found = Station(base, home, sock, service, names, {"admin": admin})
        assert found.login("reader", "admin").returncode == 0
        for user, role in (("rad", "radiologist"), ("tech", "technologist"), ("lib", "librarian"),
                           ("po", "privacy-officer")):
            added = found.run("reader", "--json", "user", "add", user, "--role", role,
                              env={"CUSTODIAN_PASSWORD": password_for(user)})
            assert added.returncode == 0, added.stderr
            found.codes[user] = Codes.of(json.loads(added.stdout)["totp_uri"])
        yield found
    finally:
        if service is not None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
        for account in names.values():
            subprocess.run(["userdel", account], check=False)
        subprocess.run(["groupdel", group], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_the_socket_and_the_vault_belong_to_the_service(station: Station) -> None:
    mode = station.socket.stat()
    assert mode.st_mode & 0o777 == 0o660
    assert station.home.stat().st_uid != 0 and station.home.stat().st_mode & 0o077 == 0
    for path in station.home.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path.name


# (command, the action roles.py decides it by)
MATRIX = [
    (("studies",), Action.LIST_STUDIES),
    (("user", "list"), Action.MANAGE_USERS),
    (("audit", "verify"), Action.AUDIT_VERIFY),
    (("node", "list"), Action.ECHO_NODE),
    (("cache",), Action.LIST_STUDIES),
    (("disclosures", "--patient", "SVC-1"), Action.DISCLOSURES),
    (("verify",), Action.VERIFY),
    (("audit", "show", "--limit", "5"), Action.AUDIT_READ),
    (("outbox",), Action.SEND),
]


@pytest.mark.parametrize("user,role", [("admin", Role.ADMIN), ("rad", Role.RADIOLOGIST),
                                       ("tech", Role.TECHNOLOGIST)])
def test_a_client_in_the_group_works_exactly_per_role(station: Station, user: str, role: Role) -> None:
    login = station.login("reader", user)
    assert login.returncode == 0, login.stderr
    whoami = station.run("reader", "--json", "whoami")
    assert json.loads(whoami.stdout)["role"] == role.value
    assert json.loads(whoami.stdout)["mode"] == "service"
    for command, action in MATRIX:
        result = station.run("reader", "--json", *command)
        expected = 0 if permits(role, action) else 3
        assert result.returncode == expected, (user, command, result.stderr)
        if expected == 3:
            assert result.stderr.startswith("custodian: ") and "Traceback" not in result.stderr


def test_files_are_read_by_the_client_and_stored_by_the_service(station: Station, tmp_path: Path) -> None:
    folder = station.base / "homes" / station.names["reader"] / "in"
    write_study(folder, Patient("SVC-1", "Served^Sam"), slices=3, size=32)
    subprocess.run(["chown", "-R", f"{station.names['reader']}:", str(folder)], check=True)
    assert station.login("reader", "tech").returncode == 0
    imported = station.run("reader", "--json", "import", str(folder))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == 3
    assert station.login("reader", "rad").returncode == 0
    studies = json.loads(station.run("reader", "--json", "studies").stdout)
    assert [s["patient_id"] for s in studies] == ["SVC-1"]


def test_an_account_outside_the_group_cannot_connect(station: Station) -> None:
    result = station.run("outsider", "whoami")
    assert result.returncode == 3
    assert "may not connect to the workstation service" in result.stderr


def test_a_session_copied_to_another_account_means_nothing(station: Station) -> None:
    assert station.login("reader", "rad").returncode == 0
    own = station.base / "homes"
    tokens = list((own / station.names["reader"]).rglob("session-*"))
    assert len(tokens) == 1
    target = own / station.names["reader2"] / tokens[0].relative_to(own / station.names["reader"])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokens[0], target)
    subprocess.run(["chown", "-R", f"{station.names['reader2']}:", str(own / station.names["reader2"])],
                   check=True)
    stolen = station.run("reader2", "whoami")
    assert stolen.returncode == 3 and "another OS account" in stolen.stderr
    assert station.run("reader", "whoami").returncode == 0
    assert station.run("reader", "logout").returncode == 0
    assert station.run("reader", "whoami").returncode == 3  # logout ended it in the service


OUTSIDE_READ = """
import json, sys
from pathlib import Path
home = Path(sys.argv[1])
try:
    names = [p.name for p in home.iterdir()]
    keystore = json.loads((home / "keystore.json").read_text())
    import sqlcipher3
    conn = sqlcipher3.connect(str(home / "index.db"))
    conn.execute("SELECT count(*) FROM users").fetchone()
    print("READ")
except PermissionError:
    print("DENIED")
"""


def test_as_a_clients_os_account_nothing_of_the_vault_can_be_read(station: Station) -> None:
    """The read that worked around the program before (argon2 + cryptography + sqlcipher3 on the
    files) fails at the first step: the files are the service account's alone."""
    for who in ("reader", "outsider"):
        account = station.names[who]
        result = subprocess.run(["setpriv", f"--reuid={account}", f"--regid={account}", "--init-groups", "--",
                                 sys.executable, "-c", OUTSIDE_READ, str(station.home)],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.stdout.strip() == "DENIED", result.stdout + result.stderr


def test_media_are_made_by_the_service_and_written_by_the_client(station: Station) -> None:
    """The service cannot write into the librarian's folder and the librarian cannot read the
    vault: the service makes the encrypted media, records the disclosure with the client's place
    for it, and the client fetches it once into that place."""
    own = station.base / "homes" / station.names["reader"]
    folder = own / "for-export"
    write_study(folder, Patient("SVC-2", "Exported^Eve"), slices=2, size=32)
    subprocess.run(["chown", "-R", f"{station.names['reader']}:", str(folder)], check=True)
    assert station.login("reader", "tech").returncode == 0
    assert station.run("reader", "import", str(folder)).returncode == 0
    assert station.login("reader", "lib").returncode == 0
    study = next(s["study_uid"] for s in json.loads(station.run("reader", "--json", "studies").stdout)
                 if s["patient_id"] == "SVC-2")
    out = own / "eve.zip"
    made = station.run("reader", "--json", "export", study, "--recipient", "Eve Exported", "--recipient-type",
                       "patient", "--purpose", "patient-request", "--identity-check", "photo-id", "--out",
                       str(out), env={"CUSTODIAN_TOTP": station.codes["lib"].next()})
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert out.stat().st_uid == pwd.getpwnam(station.names["reader"]).pw_uid  # written by the client
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result["sha256"]
    if shutil.which("7z"):
        tested = subprocess.run(["7z", "t", f"-p{result['passphrase']}", str(out)], capture_output=True)
        assert tested.returncode == 0
    assert list((station.home / "outgoing").iterdir()) == []  # fetched once, then gone
    assert station.login("reader", "po").returncode == 0
    listed = json.loads(station.run("reader", "--json", "disclosures", "--patient", "SVC-2").stdout)
    assert [d["serial"] for d in listed] == [result["serial"]]
