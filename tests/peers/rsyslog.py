"""rsyslog with the GnuTLS driver as the central audit repository (IHE ATNA, RFC 5425)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.peers.pki import Issued
from tests.peers.ports import free_port, stop_gracefully, wait_listening

CONFIG = """\
global(workDirectory="{work}" maxMessageSize="64k"
       DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/certvalid")
input(type="imtcp" port="{port}")
action(type="omfile" file="{received}" template="RSYSLOG_SyslogProtocol23Format")
"""


class Rsyslog:
    """One rsyslogd in the foreground; ``received`` is the file it writes every message to."""

    def __init__(self, folder: Path, ca: Path, server: Issued, port: int | None = None) -> None:
        self.binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "work").mkdir(exist_ok=True)
        self.port = port or free_port()
        self.received = folder / "received.log"
        self.config = folder / "rsyslog.conf"
        self.use(ca, server)
        self._process: subprocess.Popen[bytes] | None = None

    def use(self, ca: Path, server: Issued) -> None:
        """Serve with this certificate from the next start."""
        self.config.write_text(CONFIG.format(work=self.folder / "work", ca=ca, cert=server.cert,
                                             key=server.key, port=self.port, received=self.received))

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self.binary, "-n", "-f", str(self.config), "-i", str(self.folder / "rsyslog.pid")],
            stdout=subprocess.DEVNULL, stderr=(self.folder / "rsyslog.err").open("ab"))
        wait_listening(self._process, self.port, self.folder / "rsyslog.err", "rsyslogd")

    def stop(self) -> None:
        """A graceful stop: rsyslog writes out what it has queued, as a repository restart would."""
        stop_gracefully(self._process)
        self._process = None

    def lines(self) -> list[str]:
        return self.received.read_text(encoding="utf-8").splitlines() if self.received.exists() else []

    def wait_for(self, count: int, timeout: float = 15.0) -> list[str]:
        """The received lines once there are at least ``count`` (rsyslog writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)
