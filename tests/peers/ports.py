"""Free loopback ports for the peers the tests start."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path, name: str, *,
                   timeout: float = 15.0, ready: Callable[[], object] | None = None) -> None:
    """Until ``process`` accepts connections on ``port`` (and ``ready()`` succeeds); a peer that
    dies meanwhile fails the test with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            if ready is not None:
                ready()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen in time")


def stop_gracefully(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM (a peer writes out what it holds, as on a restart), then SIGKILL if it lingers."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
