"""A private X server (Xvfb with Mesa) for the VTK tests: VTK's Qt widget needs a real display."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.peers.ports import stop_gracefully


class Xvfb:
    def __init__(self) -> None:
        self.display = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("Xvfb")
        if binary is None:
            raise RuntimeError("Xvfb is missing: run installer/setup.sh as root")
        for number in range(90 + os.getpid() % 50, 400):
            if Path(f"/tmp/.X{number}-lock").exists():
                continue
            self._process = subprocess.Popen(
                [binary, f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            socket = Path(f"/tmp/.X11-unix/X{number}")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._process.poll() is None:
                if socket.exists():
                    self.display = f":{number}"
                    return
                time.sleep(0.05)
            stop_gracefully(self._process)
        raise RuntimeError("Xvfb did not start")

    def stop(self) -> None:
        stop_gracefully(self._process)
        self._process = None
