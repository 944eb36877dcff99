"""The long hardening runner: ``python -m tests.stress.run [--fuzz-cases N] [--kills N] [--guesses N]``.

Fuzzes every parser (tests/fuzz), kills the importer, the storage SCP and the exporter at random
moments, runs the resource-fault and hostile-peer checks, scans a working day's files for
secrets, attacks the login, spoofs senders and feeds decompression bombs and special files;
prints the one results table the README quotes. Exit 1 when anything crashed, hung, was lost or
damaged, leaked or let an attacker in.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from app.security.roles import Role
from tests.conftest import REPO, make_env
from tests.fuzz.run import run as fuzz
from tests.stress.attacks import run_all as attacks
from tests.stress.bombs import run_all as bombs
from tests.stress.hygiene import working_day
from tests.stress.kills import Station, Tally, kill_exports, kill_imports, kill_scps
from tests.stress.service_kills import ServiceStation, kill_service
from tests.stress.spoofing import run_all as spoofing


@dataclass
class Line:
    area: str
    what: str
    cases: int
    crashes: int | None  # None where it does not apply
    lost: int | None
    leaks: int | None  # leaks, leftovers or break-ins
    notes: str
    seconds: float

    @property
    def bad(self) -> bool:
        return bool(self.crashes or self.lost or self.leaks) or self.notes.startswith("FAILED")


def _fuzz_lines(cases: int, seed: int) -> list[Line]:
    rows, crashes = fuzz(cases, seed)
    lines = []
    for r in rows:
        notes = f"{r.accepted} accepted, {r.refused} refused with a reason"
        if r.target in crashes:
            notes += f"; first crash: {crashes[r.target]}"
        failed = r.crashes + r.hangs
        lines.append(Line("fuzzing", r.target, r.cases + failed, failed, r.lost, None, notes, r.seconds))
    return lines


def _kill_line(tally: Tally, notes: str) -> Line:
    if tally.problems:
        notes = "FAILED: " + "; ".join(tally.problems)
    if tally.finished:
        notes += f"; {tally.finished} had finished by their kill's moment"
    return Line("kill -9", tally.what, tally.kills, None, tally.lost + tally.broken_chain, tally.leftovers,
                notes + "; vault and audit chain verified after every kill", tally.seconds)


def _kill_lines(work: Path, iterations: int, rng: random.Random) -> list[Line]:
    station = Station(work / "kills")
    try:
        imports = kill_imports(station, work, iterations, rng)
        scps = kill_scps(station, iterations, rng)
        exports = kill_exports(station, work, iterations, rng)
    finally:
        station.close()
    served = ServiceStation(work / "service" / "home")
    try:
        service = kill_service(served, work, iterations, rng)
    finally:
        served.close()
    return [
        _kill_line(imports, f"{imports.mid_work} landed mid-import; {imports.acknowledged} instances indexed "
                            "at the kills, all intact; the re-import completed and swept every orphan blob"),
        _kill_line(scps, f"{scps.mid_work} landed between two instances; {scps.acknowledged} instances "
                         "acknowledged to the sender, all in the vault"),
        _kill_line(exports, f"{exports.acknowledged} media completed before the kill, each accounted for "
                            "once; otherwise no media, no disclosure, nothing in the temp dir"),
        _kill_line(service, f"{service.mid_work} landed mid-receive; {service.acknowledged} instances "
                            "acknowledged by its SCP or reported imported to a client, all in the vault; a "
                            "client killed mid-request left the service answering"),
    ]


def _checks(area: str, what: str, *tests: str) -> Line:
    """Fault checks of the suite, run as in CI (their own process, real peers)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                             *tests], cwd=REPO, capture_output=True, text=True)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error|skipped)", result.stdout)}
    total = sum(counts.values())
    notes = f"all {total} checks passed" if result.returncode == 0 and counts.get("passed") == total else \
        f"FAILED: {counts} (run {' '.join(tests)})"
    return Line(area, what, total, None, None, None, notes, time.perf_counter() - started)


def _hygiene_line(work: Path) -> Line:
    started = time.perf_counter()
    env = make_env(work / "day")
    env.add("rad", Role.RADIOLOGIST)
    env.add("tech", Role.TECHNOLOGIST)
    try:
        found = working_day(env, work / "day-out")
    finally:
        env.vault.close()
    return Line("secrets", "a working day: import, images, thumbnails, a note, an export, a backup, "
                "the audit trail sent over TLS",
                found.files, None, None, len(found.leaks),
                f"{found.needles} secrets (names, IDs, UIDs, pixels, note, passphrase, keys raw/base64/hex, "
                "TLS key) "
                f"looked for in {found.files} files" + (f"; {found.leaks[:3]}" if found.leaks else ""),
                time.perf_counter() - started)


def _attack_lines(work: Path, guesses: int) -> list[Line]:
    return [Line("authentication", a.what, a.attempts, None, None, a.got_in, a.figure, a.seconds)
            for a in attacks(work, guesses)]


def _spoofing_lines(work: Path) -> list[Line]:
    return [Line("spoofed senders", a.what, a.attempts, None, None, a.got_in, a.figure, a.seconds)
            for a in spoofing(work / "spoofing")]


def _hostile_input_lines(work: Path) -> list[Line]:
    return [Line("hostile input", r.what, r.cases, None, None, r.left, r.figure, r.seconds)
            for r in bombs(work / "bombs")]


def table(lines: list[Line]) -> str:
    def n(value: int | None) -> str:
        return "—" if value is None else str(value)

    out = ["| area | what was tried | cases | crashes or hangs | lost or damaged | leaks, leftovers or "
           "break-ins | notes | s |", "|---|---|---:|---:|---:|---:|---|---:|"]
    out += [f"| {x.area} | {x.what} | {x.cases} | {n(x.crashes)} | {n(x.lost)} | {n(x.leaks)} | {x.notes} "
            f"| {x.seconds:.0f} |" for x in lines]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz-cases", type=int, default=10_000, help="mutated inputs per fuzz target")
    parser.add_argument("--kills", type=int, default=100, help="kills of each of the three processes")
    parser.add_argument("--guesses", type=int, default=1_000, help="password guesses against one account")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom's notes on damaged character sets, thousands of them
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="custodian-stress-") as tmp:
        work = Path(tmp)
        lines = _fuzz_lines(args.fuzz_cases, args.seed)
        lines += _kill_lines(work, args.kills, random.Random(args.seed))
        lines.append(_checks("resource faults", "full disk (a small tmpfs), read-only data folder, keyring "
                             "gone, clock set back and forward", "tests/stress/test_faults.py"))
        lines.append(_checks("hostile peers", "unknown AE titles, untrusted TLS certificates, garbage and "
                             "oversized PDUs, slow-loris, floods", "tests/net/test_hostile.py",
                             "tests/net/test_scp.py::test_strangers_and_wrong_addresses_are_refused",
                             "tests/net/test_scp.py::test_the_scp_over_tls_takes_only_trusted_senders"))
        lines.append(_hygiene_line(work))
        lines += _attack_lines(work, args.guesses)
        lines += _spoofing_lines(work)
        lines += _hostile_input_lines(work)
    print(table(lines))
    print(f"\n(seed {args.seed}, {time.perf_counter() - started:.0f} s)")
    return 1 if any(x.bad for x in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
