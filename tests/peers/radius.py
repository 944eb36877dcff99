"""FreeRADIUS (Debian's) as the site's MFA server: one foreground instance on a loopback UDP port
with a generated minimal configuration, one client (this station, with :data:`SECRET`, and the
Message-Authenticator required as after BlastRADIUS) and users whose one-time code is a fixed
string of the test's choosing (the ``files`` module's ``Cleartext-Password``, checked by ``pap``),
so Access-Accept and Access-Reject are the real server's.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.peers.ports import stop_gracefully

SECRET = "radius shared secret for the tests"

CONFIG = """\
prefix = /usr
localstatedir = {folder}
logdir = {folder}
raddbdir = {folder}
confdir = {folder}
run_dir = {folder}
libdir = /usr/lib/freeradius
dictdir = /usr/share/freeradius
pidfile = {folder}/radiusd.pid
name = freeradius
max_request_time = 5
cleanup_delay = 0
log {{
    destination = files
    file = {log}
    auth = yes
}}
security {{
    allow_core_dumps = no
    reject_delay = 0
    status_server = no
}}
client custodian {{
    ipaddr = 127.0.0.1
    secret = "{secret}"
    require_message_authenticator = yes
}}
modules {{
    files {{
        filename = {folder}/users
    }}
    pap {{
    }}
}}
server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {port}
    }}
    authorize {{
        files
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
}}
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FreeRadius:
    """``freeradius -f`` with ``codes`` (user name → the one code it accepts) at ``address``."""

    def __init__(self, folder: Path, codes: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.log, self.port = folder, folder / "radius.log", free_udp_port()
        (folder / "radiusd.conf").write_text(CONFIG.format(folder=folder, log=self.log, secret=SECRET,
                                                           port=self.port))
        (folder / "users").write_text("".join(f'{name} Cleartext-Password := "{code}"\n'
                                              for name, code in codes.items()))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("freeradius") or "/usr/sbin/freeradius"
        self.log.write_text("")
        self._process = subprocess.Popen([binary, "-f", "-d", str(self.folder)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while "Ready to process requests" not in self.log.read_text(errors="replace"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"freeradius did not start: {log}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_gracefully(self._process)
        self._process = None
