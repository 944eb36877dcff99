"""Record books over the index: the SQL of studies, the cache, measurements and the outbox.

Each query names its columns after the fields of the dataclass it fills (:func:`fetch`), so no
row is ever unpacked by position. The books know no users: who may read what is the gate's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import sqlcipher3

from app.store import manifest, study_totals
from app.store.patients import CONFLICT_SQL, REFERENCE_SQL
from app.store.records import SeriesSummary, StudySummary

if TYPE_CHECKING:  # (the imaging modules load NumPy and pydicom: only the books that decode load them)
    from app.imaging.measure import Measurement
    from app.imaging.series import SeriesFrames

D = TypeVar("D")
# What :meth:`FrameInfo.from_row` reads of an instance ``i``, in its order.
FRAME_COLUMNS = ("i.sop_uid, i.study_uid, i.blob, i.sha256, i.transfer_syntax, i.rows, i.columns, i.frames, "
                 "i.samples, i.bits_allocated, i.bits_stored, i.pixel_representation, i.photometric, "
                 "i.rescale_slope, i.rescale_intercept, i.window_center, i.window_width, i.pixel_spacing, "
                 "i.position, i.orientation, i.pixel_offset, i.number, i.needs_header, i.frame_positions")


def fetch(conn: sqlcipher3.Connection, record: type[D], sql: str, params: Iterable[object] = ()) -> list[D]:
    """Rows of ``sql`` as ``record`` instances, matched by column name."""
    cursor = conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description]
    return [record(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def _split(values: str | None) -> list[str]:
    return sorted(filter(None, (values or "").split(",")))


@dataclass(frozen=True)
class ListedStudy:
    """A study as the index holds it, before the gate blanks what a role may not see."""

    uid: str
    key: int
    patient_id: str
    name: str
    study_date: str
    description: str
    accession: str
    birth_date: str
    sex: str
    restricted: int
    reference: str
    conflict: int
    modalities: str | None
    series: int
    instances: int

    def summary(self) -> StudySummary:
        return StudySummary(self.uid, self.key, self.patient_id, self.name, self.study_date,
                            _split(self.modalities), self.description, self.series, self.instances,
                            self.accession, self.birth_date, self.sex, bool(self.restricted),
                            bool(self.conflict))


@dataclass(frozen=True)
class FiledUnder:
    key: int  # the patient record
    reference: str  # the patient's reference in the audit trail
    restricted: int


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    study_uid: str
    blob: str
    sha256: str = ""
    sop_class: str = ""
    transfer_syntax: str = ""


@dataclass(frozen=True)
class Quarantined:
    id: int
    source: str
    reason: str
    size: int
    at: float


@dataclass(frozen=True)
class PriorBasis:
    """What ranks a study's priors: its patient, date, modalities and body parts."""

    patient_id: str
    study_date: str | None
    modalities: str | None
    body_parts: str | None


@dataclass(frozen=True)
class ExportRow:
    """One instance of an export, with its patient, study and series as the media needs them."""

    patient_id: str
    issuer: str
    name: str
    restricted: int
    key: int
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_description: str
    series_uid: str
    modality: str
    series_number: int | None
    sop_class: str
    sop_uid: str
    transfer_syntax: str
    number: int | None
    blob: str
    size: int
    rows: int | None
    reference: str


class StudyBook:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def listed(self, patient_id: str | None = None) -> list[ListedStudy]:
        """Every cached study (or one patient's, never a restricted one's), newest first."""
        where, params = (" WHERE p.patient_id = ? AND p.restricted = 0",
                         (patient_id,)) if patient_id is not None \
            else ("", ())
        return fetch(self._conn, ListedStudy,
                     "SELECT s.uid, p.id AS key, p.patient_id, p.name, s.study_date, s.description, "
                     f"s.accession, p.birth_date, p.sex, p.restricted, {REFERENCE_SQL} AS reference, "
                     f"{CONFLICT_SQL} AS conflict, "
                     "(SELECT group_concat(DISTINCT modality) FROM series WHERE study_uid = s.uid) "
                     "AS modalities, "
                     "(SELECT count(*) FROM series WHERE study_uid = s.uid) AS series, "
                     f"{study_totals.INSTANCES} AS instances "
                     f"FROM studies s JOIN patients p ON p.id = s.patient {study_totals.JOIN}{where} "
                     "ORDER BY s.study_date DESC, s.study_time DESC", params)

    def uids(self) -> set[str]:
        return {uid for (uid,) in self._conn.execute("SELECT uid FROM studies")}

    def series(self, study_uid: str) -> list[SeriesSummary]:
        return fetch(self._conn, SeriesSummary,
                     "SELECT se.uid AS series_uid, se.study_uid, se.modality, se.number, se.description, "
                     "count(i.sop_uid) AS instances, se.body_part FROM series se LEFT JOIN instances i ON "
                     "i.series_uid = se.uid WHERE se.study_uid = ? GROUP BY se.uid ORDER BY "
                     "se.number, se.uid",
                     (study_uid,))

    def frames(self, series_uid: str) -> SeriesFrames | None:
        """A series' images as the index describes them (nothing decrypted); None without images."""
        from app.imaging.pixels import FrameInfo
        from app.imaging.series import SeriesFrames

        rows = self._conn.execute(  # (only the series' own study's: see importer.OTHER_STUDYS_SERIES)
            f"SELECT {FRAME_COLUMNS} FROM instances i WHERE i.series_uid = ? AND i.rows IS NOT NULL "
            "AND i.study_uid = (SELECT study_uid FROM series WHERE uid = i.series_uid)",
            (series_uid,)).fetchall()
        if not rows:
            return None
        found = self._conn.execute("SELECT modality, frame_of_reference FROM series WHERE uid = ?",
                                   (series_uid,)).fetchone()
        modality, frame_of_reference = found if found else ("", "")
        return SeriesFrames([FrameInfo.from_row(row) for row in rows], modality or "",
                            frame_of_reference or "")

    def series_uids(self, study_uid: str) -> list[str]:
        return [uid for (uid,) in self._conn.execute("SELECT uid FROM series WHERE study_uid = ?",
                                                     (study_uid,))]

    def instance(self, sop_uid: str) -> StoredInstance | None:
        found = fetch(self._conn, StoredInstance,
                      "SELECT sop_uid, study_uid, blob FROM instances WHERE sop_uid = ?", (sop_uid,))
        return found[0] if found else None

    def instances(self, study_uid: str | None = None) -> list[StoredInstance]:
        """Every stored instance (or one study's, in series and instance order)."""
        select = "SELECT sop_uid, study_uid, blob, sha256, sop_class, transfer_syntax FROM instances"
        if study_uid is None:
            return fetch(self._conn, StoredInstance, select + " ORDER BY study_uid, sop_uid")
        return fetch(self._conn, StoredInstance, select + " WHERE study_uid = ? ORDER BY series_uid, number",
                     (study_uid,))

    def manifest_mismatches(self) -> list[str]:
        """Studies whose recorded manifest no longer matches their instances."""
        return [uid for uid, recorded, actual in self._conn.execute(
            f"SELECT uid, manifest, {manifest.OF_STUDY_ROWS} FROM studies")
            if (actual or manifest.EMPTY) != (recorded or manifest.EMPTY)]

    def opened(self, study_uid: str) -> None:
        """The cache keeps what was opened lately."""
        self._conn.execute("UPDATE studies SET last_opened = ? WHERE uid = ?", (time.time(), study_uid))

    def quarantined(self) -> list[Quarantined]:
        return fetch(self._conn, Quarantined,
                     "SELECT id, source, reason, size, at FROM quarantine ORDER BY id")

    def restrict(self, reference: str, issuer: str, restricted: bool) -> int:
        """Mark every record under the reference; how many."""
        return int(self._conn.execute(
            f"UPDATE patients AS p SET restricted = ? WHERE {REFERENCE_SQL} = ? AND issuer = ?",
            (int(restricted), reference, issuer)).rowcount)

    def restricted_ids(self) -> set[str]:
        return {pid for (pid,) in self._conn.execute("SELECT patient_id FROM patients WHERE restricted = 1")}

    def granted(self, user_id: int) -> set[int]:
        """Patient records the user holds a live break-glass grant for."""
        return {key for (key,) in self._conn.execute(
            "SELECT patient FROM break_glass WHERE user_id = ? AND expires_at > ?", (user_id, time.time()))}

    def patient(self, study_uid: str) -> FiledUnder | None:
        """The patient record a cached study is filed under."""
        found = fetch(self._conn, FiledUnder,
                      f"SELECT p.id AS key, {REFERENCE_SQL} AS reference, p.restricted FROM studies s "
                      "JOIN patients p ON p.id = s.patient WHERE s.uid = ?", (study_uid,))
        return found[0] if found else None

    def first_instance(self, study_uid: str) -> StoredInstance | None:
        """A study's first instance in reading order."""
        found = fetch(self._conn, StoredInstance, "SELECT sop_uid, study_uid, blob FROM instances "
                      "WHERE study_uid = ? ORDER BY number, sop_uid LIMIT 1", (study_uid,))
        return found[0] if found else None

    def grant(self, user_id: int, patient_key: int, reason: str, until: float) -> None:
        self._conn.execute("INSERT INTO break_glass (user_id, patient, reason, granted_at, expires_at) "
                           "VALUES (?, ?, ?, ?, ?)", (user_id, patient_key, reason, time.time(), until))

    def export_rows(self, study_uids: tuple[str, ...]) -> list[ExportRow]:
        return fetch(self._conn, ExportRow,
                     "SELECT p.patient_id, p.issuer, p.name, p.restricted, p.id AS key, s.uid AS study_uid, "
                     "s.study_date, s.study_time, s.accession, s.description AS study_description, "
                     "se.uid AS series_uid, se.modality, se.number AS series_number, i.sop_class, i.sop_uid, "
                     "i.transfer_syntax, i.number, i.blob, i.size, i.rows, "
                     f"{REFERENCE_SQL} AS reference FROM instances i "
                     "JOIN series se ON se.uid = i.series_uid JOIN studies s ON s.uid = i.study_uid "
                     "JOIN patients p ON p.id = s.patient "
                     f"WHERE s.uid IN ({','.join('?' * len(study_uids))}) "
                     "ORDER BY p.patient_id, p.id, s.study_date, s.uid, se.number, se.uid, "
                     "i.number, i.sop_uid",
                     study_uids)


@dataclass(frozen=True)
class Evictable:
    uid: str
    size: int


@dataclass(frozen=True)
class CacheUsage:
    bytes: int
    studies: int
    pinned: int


class CacheBook:
    """What the cache budget weighs: sizes, pins, the PACS's confirmation, last opening."""

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def at_pacs(self, study_uids: Iterable[str]) -> None:
        self._conn.executemany("UPDATE studies SET at_pacs = 1 WHERE uid = ?", [(u,) for u in study_uids])

    def pin(self, study_uid: str, pinned: bool) -> bool:
        return bool(self._conn.execute("UPDATE studies SET pinned = ? WHERE uid = ?",
                                       (int(pinned), study_uid)).rowcount)

    def total(self) -> int:
        return int(self._conn.execute("SELECT coalesce(sum(bytes), 0) FROM study_totals").fetchone()[0])

    def usage(self) -> CacheUsage:
        return fetch(self._conn, CacheUsage,
                     "SELECT coalesce(sum(bytes), 0) AS bytes, count(*) AS studies, "
                     "(SELECT count(*) FROM studies WHERE pinned = 1) AS pinned FROM study_totals "
                     "WHERE instances > 0")[0]

    def evictable(self, opened_before: float) -> list[Evictable]:
        """Studies the PACS holds, not pinned, not opened lately: least recently used first."""
        return fetch(self._conn, Evictable,
                     f"SELECT s.uid, {study_totals.BYTES} AS size FROM studies s {study_totals.JOIN} "
                     "WHERE s.at_pacs = 1 AND s.pinned = 0 AND "
                     "coalesce(s.last_opened, 0) < ? ORDER BY coalesce(s.last_opened, s.imported_at)",
                     (opened_before,))

    def prior_basis(self, study_uid: str) -> PriorBasis | None:
        """None for a study not cached or of a restricted patient (its priors are not fetched)."""
        found = fetch(self._conn, PriorBasis,
                      "SELECT p.patient_id, s.study_date, (SELECT group_concat(DISTINCT modality) "
                      "FROM series "
                      "WHERE study_uid = s.uid) AS modalities, (SELECT group_concat(DISTINCT "
                      "upper(body_part)) "
                      "FROM series WHERE study_uid = s.uid AND body_part != '') AS body_parts FROM studies s "
                      "JOIN patients p ON p.id = s.patient WHERE s.uid = ? AND p.restricted = "
                      "0", (study_uid,))
        return found[0] if found else None


class MeasurementBook:
    """A reader's measurements and notes, each kept under the reader's name."""

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def save(self, user: str, measurement: Measurement) -> tuple[int, str] | None:
        """(number, study UID) of the saved measurement; None if its image is not cached."""
        row = self._conn.execute("SELECT study_uid, series_uid FROM instances WHERE sop_uid = ?",
                                 (measurement.sop_uid,)).fetchone()
        if row is None:
            return None
        cursor = self._conn.execute(
            "INSERT INTO measurements (user, study_uid, series_uid, sop_uid, frame, kind, points, "
            "text, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user, row[0], row[1], measurement.sop_uid, measurement.frame, measurement.kind.value,
             json.dumps(measurement.points), measurement.text, time.time()))
        return int(cursor.lastrowid or 0), str(row[0])

    def of(self, user: str, series_uid: str) -> list[Measurement]:
        from app.imaging.measure import Kind, Measurement

        return [Measurement(Kind(kind), sop, frame, tuple(tuple(p) for p in json.loads(points)), text, ident)
                for ident, kind, sop, frame, points, text in self._conn.execute(
                    "SELECT id, kind, sop_uid, frame, points, text FROM measurements "
                    "WHERE user = ? AND series_uid = ? ORDER BY id", (user, series_uid))]

    def delete(self, user: str, ident: int) -> tuple[str, str] | None:
        """(study UID, kind) of the deleted measurement; None if it is not this user's."""
        row = self._conn.execute("SELECT study_uid, kind FROM measurements WHERE id = ? AND user = ?",
                                 (ident, user)).fetchone()
        if row is None:
            return None
        self._conn.execute("DELETE FROM measurements WHERE id = ?", (ident,))
        return str(row[0]), str(row[1])


@dataclass(frozen=True)
class WaitingSend:
    id: int
    node: str
    study_uid: str
    requested_by: str
    requested_at: float
    attempts: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Commitment:
    study_uid: str
    instances: int
    node: str


class OutboxBook:
    """Sends waiting for their PACS node, and the storage commitments asked of it."""

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def queue(self, node: str, study_uid: str, requested_by: str, why: str) -> None:
        self._conn.execute("INSERT INTO outbox (node, study_uid, requested_by, requested_at, last_error) "
                           "VALUES (?, ?, ?, ?, ?)", (node, study_uid, requested_by, time.time(), why))

    def waiting(self) -> list[WaitingSend]:
        return fetch(self._conn, WaitingSend,
                     "SELECT id, node, study_uid, requested_by, requested_at, attempts, last_error "
                     "FROM outbox WHERE done_at IS NULL ORDER BY id")

    def attempted(self, item_id: int, error: str, *, done: bool) -> None:
        self._conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, done_at = ? "
                           "WHERE id = ?", (error, time.time() if done else None, item_id))

    def ask(self, transaction_uid: str, study_uid: str, node: str, instances: int) -> None:
        self._conn.execute("INSERT INTO commitments (transaction_uid, study_uid, node, instances, "
                           "requested_at) VALUES (?, ?, ?, ?, ?)",
                           (transaction_uid, study_uid, node, instances, time.time()))

    def withdraw(self, transaction_uid: str) -> None:
        self._conn.execute("DELETE FROM commitments WHERE transaction_uid = ?", (transaction_uid,))

    def answered(self, transaction_uid: str, committed: int, failed: int) -> Commitment | None:
        """Record the PACS's answer; the commitment it answers (None: not ours, or answered twice)."""
        found = fetch(self._conn, Commitment, "SELECT study_uid, instances, node FROM commitments "
                      "WHERE transaction_uid = ?", (transaction_uid,))
        if not found:
            return None
        self._conn.execute("UPDATE commitments SET reported_at = ?, committed = ?, failed = ? "
                           "WHERE transaction_uid = ?", (time.time(), committed, failed, transaction_uid))
        return found[0]


class MetaBook:
    """The station's own settings kept in the index (its SCP's TLS identity, the sync's state)."""

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete(self, key: str) -> None:
        self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))


class RetiredKeys:
    """Audit checkpoint keys a key move or a restore replaced: their public halves, each valid for
    the checkpoints up to the head at its retirement (the central repository holds those signed by
    it); a copy of a retired private key can sign nothing later."""

    KEY = "audit_retired_checkpoint_keys"  # meta

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._meta = MetaBook(conn)
        self._conn = conn

    def all(self) -> list[tuple[bytes, int]]:
        """(raw Ed25519 public key, the last sequence number it may have signed)."""
        held = self._meta.get(self.KEY)
        return [(bytes.fromhex(k["public"]), int(k["until"])) for k in (json.loads(held) if held else [])]

    def retire(self, public: bytes) -> None:
        until = self._conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0]
        kept = [{"public": key.hex(), "until": seq} for key, seq in self.all()]
        self._meta.put(self.KEY, json.dumps([*kept, {"public": public.hex(), "until": until}]))
