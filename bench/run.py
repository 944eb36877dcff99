"""Custodian benchmarks: each figure is measured beside a peer in the same run.

    python bench/run.py [--quick] [--json]

Prints a list of {"figure", "value", "unit", "peer", "peer_value", "ratio", "target", "met"}
(see CONTRACT.md). Ratios are peer time / Custodian time, so higher is better for Custodian.
"""

from __future__ import annotations

import argparse
import gc
import json
import runpy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.security import totp  # noqa: E402
from app.security.roles import Role  # noqa: E402
from app.store.vault import Vault  # noqa: E402

MAKE_CT = ROOT.parent / "shared" / "tools" / "make_ct.py"


@dataclass
class Figure:
    figure: str
    value: float
    unit: str
    peer: str
    peer_value: float
    ratio: float
    target: str
    met: bool | None  # None: an informational figure without a target


def make_series(folder: Path, slices: int) -> list[Path]:
    """The shared synthetic CT when the tool is beside the project, else our own phantom."""
    if MAKE_CT.exists():
        runpy.run_path(str(MAKE_CT))["main"](str(folder), slices)
    else:
        from app.demo.studies import Patient, ct_study, to_bytes

        folder.mkdir(parents=True, exist_ok=True)
        for i, ds in enumerate(ct_study(Patient("BENCH001", "BENCH^PATIENT"), slices=slices, size=512)):
            (folder / f"CT{i:05d}.dcm").write_bytes(to_bytes(ds))
    return sorted(folder.glob("*.dcm"))


def timed(func: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median_of(runs: int, func: Callable[[], object]) -> float:
    return statistics.median(timed(func) for _ in range(runs))


def durable_copy(files: list[Path], folder: Path) -> None:
    """What any store that survives power loss must at least do: write and fsync every byte."""
    import os
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()

    def copy(path: Path) -> None:
        fd = os.open(folder / path.name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, path.read_bytes())
        os.fsync(fd)
        os.close(fd)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(copy, files))


class Workstation:
    """A fresh vault with a technologist (imports) and a radiologist (reads) logged in."""

    def __init__(self, home: Path) -> None:
        password = "bench-password-0001"
        self.vault, enrolment = Vault.create(home, admin="admin", password=password,
                                             passphrase="bench passphrase", use_keyring=False)
        _, admin = self.vault.login("admin", password, totp.current_code(enrolment.totp_secret))
        tech = self.vault.add_user(admin, "tech", Role.TECHNOLOGIST, password)
        rad = self.vault.add_user(admin, "rad", Role.RADIOLOGIST, password)
        _, self.tech = self.vault.login("tech", password, totp.current_code(tech.totp_secret))
        _, self.rad = self.vault.login("rad", password, totp.current_code(rad.totp_secret))


def bench_import_and_load(work: Path, slices: int, runs: int) -> list[Figure]:
    files = make_series(work / "ct", slices)
    for f in files:  # warm the page cache for both sides alike
        f.read_bytes()
    mb = sum(f.stat().st_size for f in files) / 1e6

    peer_import = median_of(runs, lambda: [pydicom.dcmread(f) for f in files])
    floor = median_of(runs, lambda: durable_copy(files, work / "floor"))
    ours = []
    for i in range(runs):
        station = Workstation(work / f"home{i}")
        ours.append(timed(lambda s=station: s.vault.import_paths(s.tech, [work / "ct"])))
        if i < runs - 1:
            station.vault.close()
    our_import = statistics.median(ours)

    study = station.vault.studies(station.rad)[0]
    series_uid = station.vault.series(station.rad, study.study_uid)[0].series_uid

    def our_load() -> np.ndarray:
        return station.vault.open_series(station.rad, series_uid).volume()

    def peer_load() -> np.ndarray:
        return np.stack([pydicom.dcmread(f).pixel_array for f in files])

    assert (our_load() == peer_load()[::-1]).all() or (our_load() == peer_load()).all()
    peer_load_s = median_of(runs, peer_load)
    our_load_s = median_of(runs, our_load)
    station.vault.close()
    return [
        Figure(f"import {slices}-slice 512x512 CT ({mb:.0f} MB)", round(our_import, 3), "s",
               "durable copy of the same files (write + fsync each, 4 threads; the disk's floor)",
               round(floor, 3), round(floor / our_import, 2), "informational", None),
        Figure(f"import {slices}-slice 512x512 CT ({mb:.0f} MB)", round(our_import, 3), "s",
               "plain pydicom dcmread of the same files", round(peer_import, 3),
               round(peer_import / our_import, 2), ">= 0.7", peer_import / our_import >= 0.7),
        Figure(f"load {slices}-slice CT from the vault into a numpy volume", round(our_load_s, 3), "s",
               "plain pydicom dcmread + pixel_array + np.stack", round(peer_load_s, 3),
               round(peer_load_s / our_load_s, 2), ">= 0.8", peer_load_s / our_load_s >= 0.8),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data; the whole run under a minute")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    slices, runs = (60, 3) if args.quick else (300, 5)
    with tempfile.TemporaryDirectory(prefix="custodian-bench-") as tmp:
        figures = bench_import_and_load(Path(tmp), slices, runs)
    if args.json:
        print(json.dumps([asdict(f) for f in figures], indent=1))
    else:
        for f in figures:
            verdict = "informational" if f.met is None else "met" if f.met else "NOT met"
            print(f"{f.figure}: {f.value} {f.unit} vs {f.peer} {f.peer_value} {f.unit} "
                  f"-> ratio {f.ratio} (target {f.target}: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
