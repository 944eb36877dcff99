"""The long fuzzing runner: ``python -m tests.fuzz.run [--cases N] [--seed S]``.

Runs each target of tests/fuzz/targets.py on N mutated inputs (default 10 000), imports mutated
files in batches into a fresh vault and verifies it after each batch, and restores mutated
backups; prints the results table the README quotes. Exit 1 when anything crashed, was lost or
half-written.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from app.demo.studies import Patient
from app.security.roles import Role
from tests.conftest import make_env, study_bytes
from tests.fuzz.targets import TARGETS, dicom_seeds, import_batch, media_vault_damage, mutate, restore_mutated

CASE_SECONDS = 20  # one input taking longer than this is a hang
BACKUP_PASSPHRASE = "fuzzing backup passphrase"


@dataclass
class Row:
    target: str
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: int = 0
    hangs: int = 0
    lost: int = 0  # instances missing or damaged afterwards
    seconds: float = 0.0


class Hang(Exception):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang


def _one(row: Row, call: object, first_crash: dict[str, str]) -> bool | None:
    signal.alarm(CASE_SECONDS)
    try:
        outcome = call()  # type: ignore[operator]
    except Hang:
        row.hangs += 1
        return None
    except Exception as exc:  # the finding
        row.crashes += 1
        first_crash.setdefault(row.target, f"{type(exc).__name__}: {exc}"[:200])
        return None
    finally:
        signal.alarm(0)
    row.cases += 1
    if outcome.accepted:
        row.accepted += 1
    else:
        row.refused += 1
    return outcome.accepted


def run(cases: int, seed: int) -> tuple[list[Row], dict[str, str]]:
    rng = random.Random(seed)
    rows: list[Row] = []
    crashes: dict[str, str] = {}
    signal.signal(signal.SIGALRM, _alarm)
    for name, (target, seeds) in TARGETS.items():
        row, corpus, started = Row(name), seeds(), time.perf_counter()
        for _ in range(cases):
            data = mutate(rng.choice(corpus), rng, rng.randrange(1, 5))
            _one(row, lambda data=data, target=target: target(data), crashes)
        if name.startswith("outside media"):
            row.lost = media_vault_damage()  # the studies imported before (and since) still verify
        row.seconds = time.perf_counter() - started
        rows.append(row)
    with tempfile.TemporaryDirectory(prefix="custodian-fuzz-") as work:
        env = make_env(Path(work) / "home")
        env.add("tech", Role.TECHNOLOGIST)
        intact = [data for _, data in study_bytes(Patient("FUZZ-3", "Runner^Rita"), slices=4, size=16)]
        env.vault.intake.import_bytes(env.login("tech"), [(f"intact-{i}", d) for i, d in enumerate(intact)])
        # The backup the restores start from: made before the batches grow the vault.
        backup = env.vault.admin.backup(env.login("admin"), Path(work) / "fuzz.backup",
                                        BACKUP_PASSPHRASE).path
        original = backup.read_bytes()
        batch, started = Row("vault import batches (verify after each)"), time.perf_counter()
        for _ in range(max(1, cases // 20)):
            files = intact + [mutate(rng.choice(dicom_seeds()), rng, rng.randrange(1, 5)) for _ in range(16)]
            try:
                result = import_batch(env.vault, env.login("tech"), files)
            except Exception as exc:
                batch.crashes += 1
                crashes.setdefault(batch.target, f"{type(exc).__name__}: {exc}"[:200])
                continue
            batch.cases += result.files
            batch.accepted += result.imported + result.duplicates
            batch.refused += result.refused
            batch.lost += result.damaged_after + (result.files - result.imported - result.refused
                                                  - result.duplicates)
        batch.seconds = time.perf_counter() - started
        rows.append(batch)
        restores, started = Row("restore of changed backups"), time.perf_counter()
        for case in range(max(1, min(cases // 100, 200))):
            data = mutate(original, rng, rng.randrange(1, 4))
            home = Path(work) / f"restored-{case}"
            _one(restores, lambda data=data, home=home: restore_mutated(backup, data, BACKUP_PASSPHRASE,
                                                                        home), crashes)
        restores.seconds = time.perf_counter() - started
        rows.append(restores)
        env.vault.close()
    return rows, crashes


def table(rows: list[Row]) -> str:
    lines = ["| target | cases | accepted | refused with a reason | crashes | hangs | lost or damaged | s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.target} | {r.cases} | {r.accepted} | {r.refused} | {r.crashes} | {r.hangs} | {r.lost} "
              f"| {r.seconds:.0f} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom's notes on damaged character sets, thousands of them
    rows, crashes = run(args.cases, args.seed)
    print(table(rows))
    for target, first in crashes.items():
        print(f"first crash in {target}: {first}", file=sys.stderr)
    return 1 if any(r.crashes or r.hangs or r.lost for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
