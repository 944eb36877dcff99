"""The reading window as a reader meets it: a real window on a private X server (Xvfb), keys typed
by xdotool, timed by the application's own trace (``CUSTODIAN_TRACE``): `custodian gui` to the
login window on screen, Return at the login to the window painted with its study list, to the
opened study's first image painted, and scrolling the series with the arrow key. The peer for the
login window is the floor of any Qt program: a process that imports Qt and paints an empty
dialog on the same display."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app import trace
from app.security import totp
from app.security.roles import Role
from bench.figures import Figure
from tests.peers.xvfb import Xvfb

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
KEY_RATE = 100  # arrow keys a second: faster than a keyboard repeats (about 30) or a wheel turns
PASSPHRASE = "bench passphrase"  # bench/run.py's Workstation
BARE_DIALOG = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialog
from app.ui.first_paint import mark_first_paint
app = QApplication(sys.argv)
dialog = QDialog()
mark_first_paint(dialog, "gui.login")
QTimer.singleShot(500, app.quit)
dialog.show()
app.exec()
"""


@dataclass(frozen=True)
class Reader:
    name: str
    password: str
    secret: str


@dataclass(frozen=True)
class Opening:
    login_window: float  # s from the process's start
    to_window: float  # s from Return at the login
    to_image: float
    frames_per_second: float
    last_index: int


def bench_window(work: Path, slices: int) -> list[Figure]:
    """The window's own timeline, median of RUNS openings by fresh readers of one vault."""
    if not (shutil.which("xdotool") and shutil.which("Xvfb")):
        print("window: skipped (needs xdotool and Xvfb)", file=sys.stderr)
        return []
    from bench.run import Workstation, make_series

    make_series(work / "window-ct", slices)
    station = Workstation(work / "window-home")
    station.vault.intake.import_paths(station.tech, [work / "window-ct"])
    study = station.vault.reading.studies(station.rad)[0].study_uid
    readers = [Reader(f"reader{i}", station.password,
                      station.vault.admin.add_user(station.admin, f"reader{i}", Role.RADIOLOGIST,
                                                   station.password).totp_secret) for i in range(RUNS)]
    station.vault.close()
    server = Xvfb()
    server.start()
    try:
        env = {**os.environ, "DISPLAY": server.display, "QT_QPA_PLATFORM": "xcb",
               "LIBGL_ALWAYS_SOFTWARE": "1", "CUSTODIAN_PASSPHRASE": PASSPHRASE,
               "XDG_STATE_HOME": str(work / "window-state")}
        runs = [_opening(env, work / "window-home", study, reader, work / f"window-{i}.jsonl", slices)
                for i, reader in enumerate(readers)]
        bare = statistics.median(_bare_dialog(env, work / f"bare-{i}.jsonl") for i in range(RUNS))
    finally:
        server.stop()
    login = statistics.median(r.login_window for r in runs)
    window = statistics.median(r.to_window for r in runs)
    image = statistics.median(r.to_image for r in runs)
    fps = statistics.median(r.frames_per_second for r in runs)
    scrolled = min(r.last_index for r in runs) == slices - 1
    return [
        Figure("custodian gui to the login window on screen (real window)", round(login, 3), "s",
               "a Qt process painting an empty dialog", round(bare, 3), round(bare / login, 2), "<= 1.5 s",
               login <= 1.5),
        Figure("Return at the login to the window and study list on screen", round(window, 3), "s",
               "the login window's own start", round(login, 3), round(login / window, 2), "informational",
               None),
        Figure(f"Return at the login to the opened {slices}-slice CT's first image on screen",
               round(image, 3), "s", "the login window's own start", round(login, 3), round(login / image, 2),
               "informational", None),
        Figure(f"scrolling the series with the arrow key at {KEY_RATE} keys/s in the real window"
               + ("" if scrolled else " (FAILED: the last slice was not shown)"), round(fps, 1), "frames/s",
               "the 60 frames/s target", 60.0, round(fps / 60, 2), ">= 60 frames/s", fps >= 60 and scrolled),
    ]


def _opening(env: dict[str, str], home: Path, study: str, reader: Reader, timeline: Path, slices: int
             ) -> Opening:
    env = {**env, trace.VARIABLE: str(timeline)}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "app", "--home", str(home), "gui", "--open", study],
                               cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        login = _wait(timeline, "gui.login", started)
        # A person takes seconds to type a login, long enough for what the window after it needs to
        # be imported (gui.prepared); xdotool would type it in milliseconds, into those imports.
        _wait(timeline, "gui.prepared", started)
        _xdo(env, "windowfocus", "--sync", _xdo(env, "search", "--name", "Log in").split()[0])
        code = totp.current_code(reader.secret)
        for step in (["type", "--delay", "1", reader.name], ["key", "Tab"], ["type", "--delay", "1",
                     reader.password], ["key", "Tab"], ["type", "--delay", "1", code]):
            _xdo(env, *step)
        pressed = time.monotonic()
        _xdo(env, "key", "Return")
        window = _wait(timeline, "gui.window", pressed)
        image = _wait(timeline, "view.painted", pressed)
        time.sleep(1.0)  # the window settles (thumbnails, priors)
        _xdo(env, "mousemove", "900", "500")
        _xdo(env, "click", "1")  # the viewport takes the keys (a click does not change the window)
        time.sleep(0.3)
        keys = time.monotonic()
        _xdo(env, "key", "--delay", str(1000 // KEY_RATE), "--repeat", str(slices - 1), "Down")
        time.sleep(2.0)
        painted = [m for m in trace.read(timeline) if m.event == "view.painted" and m.t > keys]
    finally:
        process.terminate()
        process.wait(30)
    span = painted[-1].t - painted[0].t if len(painted) > 1 else float("inf")
    return Opening(login.t - started, window.t - pressed, image.t - pressed, (len(painted) - 1) / span,
                   int(painted[-1].numbers.get("index", -1)) if painted else -1)


def _bare_dialog(env: dict[str, str], timeline: Path) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", BARE_DIALOG], cwd=ROOT, env={**env, trace.VARIABLE: str(timeline)},
                   check=True, timeout=60)
    return _wait(timeline, "gui.login", started).t - started


def _wait(timeline: Path, event: str, after: float, timeout: float = 60) -> trace.Moment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = trace.first(trace.read(timeline), event, after) if timeline.exists() else None
        if found is not None:
            return found
        time.sleep(0.02)
    raise RuntimeError(f"the window did not reach '{event}' within {timeout:.0f} s")


def _xdo(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, check=True).stdout
