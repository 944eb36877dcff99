"""How fast a command starts: whole-process wall time of `custodian --help`, `whoami` and `studies`
(in this process's vault, and as a client of the workstation service), beside DCMTK's
`echoscu --version` (a C program's start, informational) and the bare interpreter's start.

Each command runs once to warm the page cache, then ``runs`` times; the figure is the median.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.figures import Figure

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-0001"
PASSPHRASE = "bench passphrase"
TARGETS = {"--help": 0.2, "whoami": 0.35, "studies": 0.35}
PYCACHE = str(Path(tempfile.gettempdir()) / "custodian-bench-pycache")


def custodian() -> list[str]:
    """The installed console script (what a person or a script runs), else ``python -m app``."""
    script = Path(sys.executable).with_name("custodian")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app"]


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Custodian's settings, byte-compiling as an installed copy
    does (pip compiles on install; PYTHONDONTWRITEBYTECODE would compile every module on every run),
    into a cache of the benchmark's own (the working tree is left alone)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CUSTODIAN_") and k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": PYCACHE, **extra}


def _run(home: Path, argv: list[str], env: dict[str, str]) -> dict[str, object]:
    """``custodian --home HOME --json ARGV...``, its answer; setting up, so a failure stops the bench."""
    result = subprocess.run([*custodian(), "--home", str(home), "--json", *argv], env=env,
                            capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"custodian {argv[0]} failed: {result.stderr.strip()}")
    answer: dict[str, object] = json.loads(result.stdout) if result.stdout.strip() else {}
    return answer


def _secret(enrolment: dict[str, object]) -> str:
    return str(enrolment["totp_uri"]).split("secret=")[1].split("&")[0]


def _fill(home: Path, env: dict[str, str], admin_secret: str, study: Path) -> None:
    """A technologist added, logged in, and one small CT study imported (through ``env``'s mode)."""
    from app.security.totp import current_code

    step = time.time()
    _run(home, ["login"], {**env, "CUSTODIAN_USER": "admin", "CUSTODIAN_PASSWORD": PASSWORD,
                           "CUSTODIAN_TOTP": current_code(admin_secret, step)})
    tech = _run(home, ["user", "add", "tech", "--role", "technologist"],
                {**env, "CUSTODIAN_PASSWORD": PASSWORD})
    _run(home, ["login"], {**env, "CUSTODIAN_USER": "tech", "CUSTODIAN_PASSWORD": PASSWORD,
                           "CUSTODIAN_TOTP": current_code(_secret(tech), step)})
    _run(home, ["import", str(study)], env)


def _study(folder: Path) -> Path:
    from app.demo.studies import Patient, ct_study, to_bytes

    folder.mkdir(parents=True)
    for i, ds in enumerate(ct_study(Patient("BENCH002", "BENCH^START"), slices=4, size=64)):
        (folder / f"CT{i:05d}.dcm").write_bytes(to_bytes(ds))
    return folder


@contextlib.contextmanager
def _service(work: Path, study: Path) -> Iterator[dict[str, str]]:
    """A service vault served by `custodian service`; yields a client's environment, logged in."""
    home, sock = work / "start-service", work / "start.sock"
    init = _run(home, ["init", "--admin", "admin", "--service"], _clean_env(CUSTODIAN_PASSWORD=PASSWORD))
    process = subprocess.Popen([*custodian(), "service", "--home", str(home), "--socket", str(sock)],
                               cwd=ROOT, env=_clean_env(), stdin=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the workstation service did not start")
            time.sleep(0.05)
        client = _clean_env(CUSTODIAN_SOCKET=str(sock), XDG_STATE_HOME=str(work / "client-state"))
        _fill(home, client, _secret(init), study)
        yield client
    finally:
        process.terminate()
        process.wait(30)


def wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of the whole process, after one run that warms the page cache."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def bench_startup(work: Path, runs: int) -> list[Figure]:
    study = _study(work / "start-ct")
    home = work / "start-embedded"
    embedded = _clean_env(CUSTODIAN_PASSPHRASE=PASSPHRASE)
    init = _run(home, ["init", "--admin", "admin", "--key-storage", "passphrase"],
                {**embedded, "CUSTODIAN_PASSWORD": PASSWORD})
    _fill(home, embedded, _secret(init), study)
    bare = [sys.executable, "-c", "pass"]
    echoscu = shutil.which("echoscu")
    peer = "DCMTK echoscu --version" if echoscu else "the bare interpreter (python -c pass)"
    peer_s = wall([echoscu, "--version"] if echoscu else bare, _clean_env(), runs)
    measured = [("--help", "", wall([*custodian(), "--help"], embedded, runs))]
    measured += [(command, " (embedded: opens the vault here)",
                  wall([*custodian(), "--home", str(home), command], embedded, runs))
                 for command in ("whoami", "studies")]
    with _service(work, study) as client:
        measured += [(command, " (a client of the workstation service)",
                      wall([*custodian(), command], client, runs)) for command in ("whoami", "studies")]
    figures = [Figure(f"custodian {command}{mode}, whole process", round(value, 3), "s", peer,
                      round(peer_s, 3), round(peer_s / value, 3), f"<= {TARGETS[command]} s",
                      value <= TARGETS[command]) for command, mode, value in measured]
    interpreter = wall(bare, _clean_env(), runs)
    return [*figures, Figure("the interpreter's own start (python -c pass), whole process",
                             round(interpreter, 3), "s", peer, round(peer_s, 3),
                             round(peer_s / interpreter, 3), "informational", None)]
