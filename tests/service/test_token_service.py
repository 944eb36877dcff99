"""The service with its master key sealed in a PKCS#11 token (SoftHSM2): it boots without a person,
and with the token gone it stays up but locked, tells every client why, and records a security
alert once the token is back and the trail can be written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.security.sealing import PIN_ENV
from tests.conftest import ADMIN_PASSWORD, REPO, Codes, password_for
from tests.peers.softhsm import MODULE, PIN, SoftToken


def _custodian(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**clean, **env}, stdin=subprocess.DEVNULL)


def test_a_token_service_boots_locked_without_its_token_and_unlocks_when_it_returns(
        token: SoftToken, tmp_path: Path) -> None:
    home, sock = tmp_path / "service", tmp_path / "run" / "custodian.sock"
    init = _custodian("--home", str(home), "--json", "init", "--admin", "admin", "--service",
                      "--pkcs11", MODULE, "--slot", str(token.slot),
                      CUSTODIAN_PASSWORD=ADMIN_PASSWORD, **{PIN_ENV: PIN})
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["key_storage"] == "pkcs11"
    codes = Codes.of(json.loads(init.stdout)["totp_uri"])

    away = token.tokens.with_name("tokens-away")
    token.tokens.rename(away)  # the token is taken out before the machine starts
    token.tokens.mkdir()
    service = subprocess.Popen([sys.executable, "-m", "app", "service", "--home", str(home), "--socket",
                                str(sock)], cwd=REPO, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env={k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")})
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert service.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        client = {"CUSTODIAN_SOCKET": str(sock)}
        locked = _custodian("whoami", **client)
        assert locked.returncode == 3
        assert "The workstation service is locked" in locked.stderr and "not present" in locked.stderr
        assert PIN not in locked.stderr

        token.tokens.rmdir()
        away.rename(token.tokens)  # the token is back: the service unlocks by itself
        deadline = time.monotonic() + 30
        while True:
            login = _custodian("login", **client, CUSTODIAN_USER="admin", CUSTODIAN_PASSWORD=ADMIN_PASSWORD,
                               CUSTODIAN_TOTP=codes.next())
            if login.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert login.returncode == 0, login.stderr
        added = _custodian("--json", "user", "add", "po", "--role", "privacy-officer", **client,
                           CUSTODIAN_PASSWORD=password_for("po"))
        assert added.returncode == 0, added.stderr
        po = Codes.of(json.loads(added.stdout)["totp_uri"])
        assert _custodian("login", **client, CUSTODIAN_USER="po", CUSTODIAN_PASSWORD=password_for("po"),
                          CUSTODIAN_TOTP=po.next()).returncode == 0
        shown = _custodian("--json", "audit", "show", **client)
        assert shown.returncode == 0, shown.stderr
        alerts = [r for r in json.loads(shown.stdout) if "could not unlock" in json.dumps(r.get("detail"))]
        assert len(alerts) == 1
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
    err = service.stderr.read().decode() if service.stderr else ""
    assert service.returncode == 0, err
    assert not sock.exists(), err  # a clean stop takes its socket away
