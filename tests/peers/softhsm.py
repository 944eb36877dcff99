"""SoftHSM2: a PKCS#11 token of a test's own, in its own token directory (the real library)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.security.sealing import PIN_ENV, TokenSealer

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "2468-test-pin"


@dataclass
class SoftToken:
    """A SoftHSM2 token of this test's own, in its own token directory."""

    conf: Path
    tokens: Path
    label: str
    slot: int

    def sealer(self, pin: str = PIN) -> TokenSealer:
        return TokenSealer(MODULE, slot=self.slot, pin=pin)

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}


def softhsm_conf(path: Path, tokens: Path) -> Path:
    tokens.mkdir(parents=True, exist_ok=True)
    path.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    return path


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    conf = softhsm_conf(tmp_path / "softhsm2.conf", tmp_path / "tokens")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.delenv(PIN_ENV, raising=False)
    made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "custodian-test",
                           "--pin", PIN, "--so-pin", "so-pin-13579"], capture_output=True, text=True,
                          check=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    found = re.search(r"reassigned to slot (\d+)", made.stdout)
    assert found, made.stdout
    return SoftToken(conf, tmp_path / "tokens", "custodian-test", int(found[1]))
