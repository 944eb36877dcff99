"""DCMTK's storescp as a plain DICOM peer (optionally with TLS)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.peers.pki import Issued
from tests.peers.ports import free_port, stop_gracefully, wait_listening


class StoreScp:
    def __init__(self, folder: Path, aet: str = "STORESCP", *,
                 tls: tuple[Path, Issued] | None = None) -> None:
        self.folder = folder
        self.out = folder / "received"
        self.out.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.port = free_port()
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [shutil.which("storescp") or "storescp", "--aetitle", self.aet, "--output-directory",
                   str(self.out)]
        if self.tls is not None:
            ca, own = self.tls
            command += ["+tls", str(own.key), str(own.cert), "+cf", str(ca), "--require-peer-cert"]
        command.append(str(self.port))
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                         stderr=(self.folder / "storescp.log").open("ab"),
                                         env={**os.environ, "TCP_NODELAY": "1"})
        wait_listening(self._process, self.port, self.folder / "storescp.log", "storescp")

    def stop(self) -> None:
        stop_gracefully(self._process)
        self._process = None


def storescu(port: int, files: list[Path], *, calling: str = "STORESCU", called: str = "STORESCP",
             tls: tuple[Path, Issued] | None = None) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu sending ``files`` to 127.0.0.1:``port`` (Nagle off, as the benchmark needs);
    ``tls``: (CA file, our certificate) for a TLS association."""
    secure = ["+tls", str(tls[1].key), str(tls[1].cert), "+cf", str(tls[0])] if tls else []
    return subprocess.run([shutil.which("storescu") or "storescu", *secure, "-aet", calling, "-aec", called,
                           "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TCP_NODELAY": "1"})
