"""Scale: a busy reading station's vault after two years, and how each cost grows with its size.

    python bench/scale.py [--quick]

The index is filled with synthetic rows (direct inserts through the vault's own connection, in
large transactions: tens of thousands of studies, millions of instances and audit events in
minutes); a few real studies are imported through the ordinary path at each size so that
``verify`` and cache eviction have real blobs to work on. Every cost is then measured through
the product's own services at two sizes, so the figures say how it grows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlcipher3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.audit.dicom_xml import to_xml  # noqa: E402
from app.audit.events import AuditEvent, EventType  # noqa: E402
from app.audit.log import GENESIS, _digest  # noqa: E402
from app.audit.report import AuditQuery, ReportKind  # noqa: E402
from app.imaging.hanging import patient_studies, relevant_prior  # noqa: E402
from app.security import totp  # noqa: E402
from app.security.roles import Role  # noqa: E402
from app.store.books import StudyBook  # noqa: E402
from bench.figures import Figure  # noqa: E402

STUDIES_PER_PATIENT = 4  # two years of a reading station: follow-ups and priors
SERIES_PER_STUDY = 4
SAMPLE_SLICES = 40  # each real study imported at each size
SAMPLE_STUDIES = 2
SYNTHETIC_SIZE = 520_000  # bytes an instance row claims (a 512² CT slice)
BATCH = 20_000  # rows per executemany
MODALITIES = ("CT", "MR", "CR", "US", "PT", "MG")
TWO_YEARS = timedelta(days=730)
START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Size:
    studies: int
    instances: int
    events: int


FULL = (Size(2_000, 500_000, 1_000_000), Size(20_000, 5_000_000, 3_000_000))
QUICK = (Size(200, 20_000, 20_000), Size(1_000, 100_000, 100_000))


def _timed(func: Callable[[], object], runs: int = 3) -> float:
    """Best of ``runs``: the cost itself, not the other engineers' jobs on the machine."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def _patient_id(n: int) -> str:
    return f"SYN{n:07d}"


def _study_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.10.5432.{n}"


def _study_rows(first: int, last: int, key_base: int) -> Iterator[tuple[tuple[object, ...], ...]]:
    """(patient, data key, study) rows of synthetic studies ``first`` .. ``last - 1``."""
    rng = random.Random(first)
    for n in range(first, last):
        patient = n // STUDIES_PER_PATIENT + 1_000_000  # clear of the real sample's records
        uid = _study_uid(n)
        day = START + TWO_YEARS * (n / max(last, 1))
        yield ((patient, _patient_id(patient), f"SYNTHETIC^PATIENT{patient}", "19600101", "O"),
               (key_base + n, f"study/{uid}", "kid-synthetic", rng.randbytes(72)),
               (uid, patient, key_base + n, day.strftime("%Y%m%d"), "101500", f"ACC{n:08d}",
                f"{rng.choice(MODALITIES)} follow-up", "REFERRING^DOCTOR", rng.randbytes(2048),
                day.timestamp(),
                time.time() - rng.uniform(2, 29) * 86_400))


def fill_studies(conn: sqlcipher3.Connection, first: int, last: int, per_study: int) -> None:
    """Synthetic patients, studies, series and instances, as an import would have written them."""
    execute = conn.execute
    execute("BEGIN IMMEDIATE")
    rows = list(_study_rows(first, last, 10_000_000))
    conn.executemany("INSERT OR IGNORE INTO patients (id, patient_id, issuer, name, birth_date, sex) "
                     "VALUES (?, ?, '', ?, ?, ?)", [r[0] for r in rows])
    conn.executemany("INSERT INTO data_keys (id, context, kid, wrapped) VALUES (?, ?, ?, ?)",
                     [r[1] for r in rows])
    # held by the PACS and opened in the last weeks: each is weighed by the budget, none evicted
    conn.executemany("INSERT INTO studies (uid, patient, key_id, study_date, study_time, accession, "
                     "description, referring, manifest, imported_at, last_opened, at_pacs) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                     [r[2] for r in rows])
    execute("COMMIT")
    for chunk in range(first, last, max(1, BATCH // per_study)):
        execute("BEGIN IMMEDIATE")
        series, instances = [], []
        for n in range(chunk, min(last, chunk + max(1, BATCH // per_study))):
            study = _study_uid(n)
            for s in range(SERIES_PER_STUDY):
                series_uid = f"{study}.{s + 1}"
                series.append((series_uid, study, MODALITIES[n % len(MODALITIES)], s + 1, "AXIAL 1.0",
                               "CHEST", f"{study}.99"))
                for i in range(per_study // SERIES_PER_STUDY):
                    sop = f"{series_uid}.{i + 1}"
                    digest = hashlib.sha256(sop.encode()).hexdigest()
                    instances.append((sop, series_uid, study, "1.2.840.10008.5.1.4.1.1.2", i + 1,
                                      digest[:32], SYNTHETIC_SIZE, digest, "1.2.840.10008.1.2.1", 512, 512, 1,
                                      1, 16, 12, 1, "MONOCHROME2", 1.0, -1024.0, 40.0, 400.0,
                                      "0.7\\0.7", f"-180\\-180\\{-i * 1.25}", "1\\0\\0\\0\\1\\0", 1234,
                                      1.7e9))
        conn.executemany("INSERT INTO series (uid, study_uid, modality, number, description, body_part, "
                         "frame_of_reference) VALUES (?, ?, ?, ?, ?, ?, ?)", series)
        conn.executemany(
            "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class, number, blob, size, sha256, "
            "transfer_syntax, rows, columns, frames, samples, bits_allocated, bits_stored, "
            "pixel_representation, photometric, rescale_slope, rescale_intercept, window_center, "
            "window_width, pixel_spacing, position, orientation, pixel_offset, imported_at) "
            f"VALUES ({', '.join('?' * 26)})", instances)
        execute("COMMIT")


def _event_templates() -> list[tuple[str, str]]:
    """(record, message) of the commonest events, with marks where each event's own values go."""
    at = "2026-01-01T00:00:00.000000+00:00"
    events = [AuditEvent(EventType.INSTANCES_READ, user="USERMARK", studies=("STUDYMARK",),
                         patients=("PATIENTMARK",), detail={"instances": 120}),
              AuditEvent(EventType.STUDY_LIST, user="USERMARK", patients=("PATIENTMARK",),
                         detail={"studies": 1, "query": {"patient_id": "PATIENTMARK"}}),
              AuditEvent(EventType.IMPORT, user="USERMARK", studies=("STUDYMARK",),
                         patients=("PATIENTMARK",), detail={"instances": 250})]
    return [(json.dumps(e.as_record(), sort_keys=True, separators=(",", ":")),
             to_xml(e, at).replace(at, "ATMARK")) for e in events]


def fill_audit(conn: sqlcipher3.Connection, events: int, studies: int, sign: Callable[[int, str, str], None]
               ) -> None:
    """``events`` more records on the chain, valid (each hashed onto the one before, a signed
    checkpoint every hundred as the log writes them), naming the synthetic patients and studies."""
    from app.audit.log import CHECKPOINT_EVERY

    templates = _event_templates()
    rng = random.Random(events)
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = row if row else (0, GENESIS)
    step = TWO_YEARS / max(events, 1)
    for chunk in range(0, events, BATCH):
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for k in range(chunk, min(events, chunk + BATCH)):
            seq += 1
            study = rng.randrange(max(studies, 1))
            patient = _patient_id(study // STUDIES_PER_PATIENT + 1_000_000)
            at = (START + step * k).isoformat(timespec="microseconds")
            record, message = templates[k % 10 // 8]  # eight image reads to one study list
            marks = {"USERMARK": f"rad{k % 9}", "STUDYMARK": _study_uid(study), "PATIENTMARK": patient}
            for mark, value in marks.items():
                record, message = record.replace(mark, value), message.replace(mark, value)
            message = message.replace("ATMARK", at)
            digest = _digest(prev, seq, at.encode(), record.encode(), message.encode())
            rows.append((seq, at, record, message, prev, digest))
            if seq % CHECKPOINT_EVERY == 0:
                conn.executemany("INSERT INTO audit (seq, at, record, message, prev_hash, hash) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", rows)
                rows = []
                sign(seq, digest, at)
            prev = digest
        conn.executemany("INSERT INTO audit (seq, at, record, message, prev_hash, hash) "
                         "VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")


@dataclass
class Measured:
    """One size's costs, in seconds unless the name says otherwise."""

    size: Size
    study_list: float = 0.0  # every study, as the window loads it
    study_list_filtered: float = 0.0  # one patient's, as `custodian studies --patient` asks
    timeline: float = 0.0  # the patient's timeline and prior, from the loaded list
    series: float = 0.0  # a study's series, as choosing it in the timeline lists them
    appends_per_s: float = 0.0  # durable audit appends, one writer
    access_records: float = 0.0  # a patient's records from the trail
    access_records_scan: float = 0.0  # the same, read through the whole trail (before its lookup)
    access_report: float = 0.0  # the report as the privacy officer asks it (chain verified)
    audit_verify_per_s: float = 0.0
    verify_index_per_instance: float = 0.0  # verify's reading of the index (list and manifests)
    eviction: float = 0.0  # to budget, the real sample studies evicted among the synthetic ones
    evicted: int = 0
    bytes_per_instance: float = 0.0  # of the index, the audit trail apart
    bytes_per_event: float = 0.0


def index_bytes(vault: object) -> int:
    core = vault._core  # type: ignore[attr-defined]
    with core.reading() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(core.home / "index.db")


class ScaleRun:
    """One vault grown through the sizes; the station's users from bench/run.py's Workstation."""

    def __init__(self, work: Path) -> None:
        from bench.run import Workstation

        self.work = work
        self.station = Workstation(work / "scale-home")
        vault, secrets, password = self.station.vault, self.station.secrets, self.station.password
        for name, role in (("po", Role.PRIVACY_OFFICER), ("keeper", Role.ADMIN)):
            secrets[name] = vault.admin.add_user(self.station.admin, name, role, password).totp_secret
        self.rad, self.tech = self.station.rad, self.station.tech
        self.po, self.admin = (vault.accounts.login(name, password, totp.current_code(secrets[name]))[1]
                               for name in ("po", "keeper"))
        self.logged_in = time.monotonic()
        self.studies = self.events = 0
        self.audit_bytes = 0
        self.samples = 0

    def login(self) -> None:
        """Sessions anew after building a size (minutes: longer than a session stays unlocked idle)."""
        if time.monotonic() - self.logged_in < 300:
            return
        vault, secrets, password = self.station.vault, self.station.secrets, self.station.password
        self.rad, self.tech, self.po, self.admin = (
            vault.accounts.login(name, password, totp.current_code(secrets[name]))[1]
            for name in ("rad", "tech", "po", "keeper"))
        self.logged_in = time.monotonic()

    def import_sample(self) -> list[str]:
        """Real studies through the ordinary import; their UIDs."""
        from bench.run import make_series

        uids = []
        for _ in range(SAMPLE_STUDIES):
            self.samples += 1
            folder = self.work / f"sample{self.samples}"
            make_series(folder, SAMPLE_SLICES)
            report = self.station.vault.intake.import_paths(self.tech, [folder])
            uids += report.studies
        return uids

    def real_verify_per_s(self) -> float:
        """Instances per second ``verify`` checks of real blobs (before any synthetic row)."""
        self.import_sample()
        vault, admin = self.station.vault, self.admin
        seconds = _timed(lambda: vault.admin.verify(admin), runs=3)
        return vault.admin.verify(admin).instances / seconds

    def grow(self, size: Size) -> Measured:
        vault = self.station.vault
        core, audit = vault._core, vault._gate._audit
        per_study = size.instances // size.studies
        before = index_bytes(vault)
        with core.lock:
            fill_studies(core.conn, self.studies, size.studies, per_study)
        added = index_bytes(vault) - before
        with core.lock:
            fill_audit(core.conn, size.events - self.events, size.studies, audit._checkpoint)
        after = index_bytes(vault)
        measured = Measured(size, bytes_per_instance=(before + added - self.audit_bytes) / size.instances,
                            bytes_per_event=(after - before - added) / (size.events - self.events))
        self.audit_bytes += after - before - added
        self.studies, self.events = size.studies, size.events
        self.login()
        self.measure_reading(measured)
        self.measure_audit(measured)
        self.measure_cache(measured)
        return measured

    def measure_reading(self, m: Measured) -> None:
        vault, rad = self.station.vault, self.rad
        patient = _patient_id(m.size.studies // 2 // STUDIES_PER_PATIENT + 1_000_000)
        m.study_list = _timed(lambda: vault.reading.studies(rad))
        m.study_list_filtered = _timed(lambda: vault.reading.studies(rad, patient))
        listed = vault.reading.studies(rad)
        current = next(s for s in listed if s.patient_id == patient)
        m.timeline = _timed(lambda: (patient_studies(current, listed), relevant_prior(current, listed)))
        m.series = _timed(lambda: vault.reading.series(rad, current.study_uid))
        with vault._core.reading() as conn:
            book = StudyBook(conn)
            m.verify_index_per_instance = _timed(lambda: (book.instances(), book.manifest_mismatches()),
                                                 runs=1) / m.size.instances

    def measure_audit(self, m: Measured) -> None:
        """The whole chain verified first (as a station's nightly check would), so the report then
        walks what was added after that verify's signed mark: the appends measured here."""
        vault, po, admin = self.station.vault, self.po, self.admin
        chain = _timed(lambda: vault.trail.verify(admin), runs=1)
        m.audit_verify_per_s = vault._gate._audit.head() / chain
        appends = 200
        events = [AuditEvent(EventType.INSTANCES_READ, user="rad1", studies=(_study_uid(i),),
                             patients=(_patient_id(i // STUDIES_PER_PATIENT + 1_000_000),))
                  for i in range(appends)]
        start = time.perf_counter()
        for event in events:
            vault._gate._record(event)  # returns once its commit is durable
        m.appends_per_s = appends / (time.perf_counter() - start)
        query = AuditQuery(patient=_patient_id(m.size.studies // 3 // STUDIES_PER_PATIENT + 1_000_000),
                           limit=None)
        with vault._core.reading() as conn:
            m.access_records = _timed(lambda: vault._gate._audit.records(query))
            m.access_records_scan = _timed(lambda: conn.execute(
                "SELECT seq, at, record, message FROM audit WHERE EXISTS (SELECT 1 FROM json_each(record, "
                "'$.patients') WHERE value = ?) ORDER BY seq DESC", (query.patient,)).fetchall(), runs=1)
        m.access_report = _timed(lambda: vault.trail.report(po, ReportKind.PATIENT, query), runs=1)

    def measure_cache(self, m: Measured) -> None:
        """The sample studies, held by the PACS and not opened for a month, evicted to a budget
        that leaves the synthetic rows' bytes just within it."""
        vault, admin = self.station.vault, self.admin
        uids = self.import_sample()
        with vault._core.transaction() as conn:
            conn.executemany("UPDATE studies SET at_pacs = 1, last_opened = ? WHERE uid = ?",
                             [(time.time() - 30 * 86_400, uid) for uid in uids])
            sample = conn.execute(f"SELECT sum(size) FROM instances WHERE study_uid IN "
                                  f"({','.join('?' * len(uids))})", uids).fetchone()[0]
            total = conn.execute("SELECT sum(size) FROM instances").fetchone()[0]
        vault.admin.set_policy(admin, "cache_budget_mb", str((total - sample) // 1_000_000 + 1))
        start = time.perf_counter()
        evicted = vault.cache.evict_to_budget(admin)
        m.eviction = time.perf_counter() - start
        m.evicted = len(evicted)
        vault.admin.set_policy(admin, "cache_budget_mb", "0")


# (field of Measured, what it is, unit, target as text, the test of the target or None)
COSTS: tuple[tuple[str, str, str, str, Callable[[float], bool] | None], ...] = (
    ("study_list_filtered", "study list, one patient's studies (filter)", "s", "<= 0.1 s",
     lambda v: v <= 0.1),
    ("study_list", "study list, every study (the window's load)", "s", "informational", None),
    ("timeline", "patient's timeline and relevant prior, from the loaded list", "s", "informational", None),
    ("series", "a study's series (choosing it in the timeline)", "s", "informational", None),
    ("access_records", "a patient's records from the audit trail", "s", "<= 1 s", lambda v: v <= 1.0),
    ("access_records_scan", "the same, reading the whole trail (the query before its lookup)", "s",
     "informational", None),
    ("access_report", "patient access report (chain walked from the signed mark of the last verify)", "s",
     "<= 1 s", lambda v: v <= 1.0),
    ("appends_per_s", "durable audit appends, one writer", "events/s", "informational", None),
    ("audit_verify_per_s", "audit chain verify", "events/s", "informational", None),
    ("verify_index_per_instance", "verify: reading the index (instance list, study manifests)",
     "s/instance", "informational", None),
    ("eviction", "cache eviction to budget (the real sample studies evicted)", "s", "informational", None),
    ("bytes_per_instance", "index size per instance row (studies, series, keys included)", "bytes",
     "informational", None),
    ("bytes_per_event", "index size per audit event", "bytes", "informational", None),
)


def _label(size: Size) -> str:
    return f"{size.studies} studies, {size.instances} instances, {size.events} events"


def figures_of(measured: list[Measured], real_verify: float) -> list[Figure]:
    """Each cost at the largest size, beside the same cost at the smallest (the peer): the ratio
    says how it grew (1.0 flat; about 1/k for a cost that grows k-fold with a k-fold vault, a rate
    that falls k-fold included)."""
    small, large = measured[0], measured[-1]
    figures = [Figure("verify of real blobs (decrypt and hash each instance)", round(real_verify),
                      "instances/s", "-", 0.0, 0.0, "informational", None)]
    for name, what, unit, target, test in COSTS:
        value, peer = getattr(large, name), getattr(small, name)
        figures.append(Figure(f"scale: {what} ({_label(large.size)})", round(value, 6), unit,
                              f"same at {_label(small.size)}", round(peer, 6),
                              round((value / peer if unit.endswith("/s") else peer / value) if value and peer
                                    else 0.0, 3), target,
                              None if test is None else test(value)))
    return figures


def table(measured: list[Measured]) -> str:
    """The cost at each size, one row per cost, for the README."""
    head = "| cost | " + " | ".join(
        f"{m.size.studies:,} st / {m.size.instances:,} inst / {m.size.events:,} ev" for m in measured) + " |"
    lines = [head, "|---" * (len(measured) + 1) + "|"]
    for name, what, unit, _, _ in COSTS:
        lines.append(f"| {what} ({unit}) | " + " | ".join(f"{getattr(m, name):.4g}" for m in measured) + " |")
    return "\n".join(lines)


def bench_scale(work: Path, quick: bool) -> list[Figure]:
    run = ScaleRun(work)
    real_verify = run.real_verify_per_s()
    measured = []
    for size in QUICK if quick else FULL:
        started = time.perf_counter()
        measured.append(run.grow(size))
        print(f"scale: {_label(size)} built and measured in {time.perf_counter() - started:.0f} s\n"
              f"{measured[-1]}", file=sys.stderr, flush=True)
    print(table(measured), file=sys.stderr)
    run.station.vault.close()
    return figures_of(measured, real_verify)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; under a minute")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="custodian-scale-") as tmp:
        for f in bench_scale(Path(tmp), args.quick):
            print(json.dumps(f.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
