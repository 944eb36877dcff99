"""Patient records: which stored patient a study is filed under.

Patient safety decides the rules. A study joins the record of its Patient ID and Issuer only
when that record's name and birth date are its own; a different name or birth date under the same
ID (two sites' ID ranges colliding, a typo at the modality) gets a record of its own, marked as a
conflict, and is never merged silently: an import role reconciles the two explicitly. A study
without a Patient ID always has a record of its own (its *anchor* is its Study Instance UID):
nothing else says who its patient is, so it never shows another study's name, birth date or sex.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlcipher3

from app.errors import CustodianError

NO_ID_PREFIX = "noid:"
# How a patient is named where a Patient ID is expected (the audit trail, restriction): the ID,
# or for a patient without one, the study whose record it is. ``p`` is the patients table.
REFERENCE_SQL = f"(CASE WHEN p.patient_id != '' THEN p.patient_id ELSE '{NO_ID_PREFIX}' || p.anchor END)"
# Whether another record shares this record's Patient ID and Issuer (a conflict still to reconcile).
CONFLICT_SQL = ("(p.patient_id != '' AND EXISTS (SELECT 1 FROM patients q WHERE q.patient_id = p.patient_id "
                "AND q.issuer = p.issuer AND q.id != p.id))")


def reference(patient_id: str, anchor: str) -> str:
    return patient_id or f"{NO_ID_PREFIX}{anchor}"


def normalised_name(name: str) -> str:
    """A Person Name compared as a person would read it: its alphabetic group, case and spacing
    folded, empty trailing components dropped ('CITIZEN^JAN^^' is 'Citizen^Jan')."""
    components = name.split("=", 1)[0].split("^")
    return "^".join(" ".join(c.split()).casefold() for c in components).rstrip("^")


@dataclass(frozen=True)
class Demographics:
    """What a study's own instances say of its patient."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str

    def same_person(self, other: Demographics) -> bool:
        """Same Patient ID and Issuer, and neither name nor birth date differ (an empty value on
        one side and not the other differs too: otherwise two different names could both join a
        record that has none)."""
        return ((self.patient_id, self.issuer) == (other.patient_id, other.issuer)
                and normalised_name(self.name) == normalised_name(other.name)
                and self.birth_date.strip() == other.birth_date.strip())

    def describe(self) -> str:
        """For the person importing (who may see demographics): name and birth date."""
        born = f", born {self.birth_date}" if self.birth_date else ""
        return f"'{self.name.replace('^', ' ').strip() or '(no name)'}'{born}"


@dataclass(frozen=True)
class Filing:
    """Where a new study went: its patient record, and the record whose Patient ID it shares but
    whose demographics differ (None when there is no conflict)."""

    key: int
    reference: str  # how the audit trail names this patient (see REFERENCE_SQL)
    conflict: Demographics | None = None


class PatientBook:
    """The patients table; callers hold the transaction."""

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def file(self, study_uid: str, own: Demographics) -> Filing:
        """The record for a new study whose instances carry ``own``."""
        if not own.patient_id.strip():
            return self._insert(own, anchor=study_uid)
        candidates = [(key, Demographics(own.patient_id, own.issuer, name, birth, sex))
                      for key, name, birth, sex in self._conn.execute(
                          "SELECT id, name, birth_date, sex FROM patients "
                          "WHERE patient_id = ? AND issuer = ? ORDER BY id", (own.patient_id, own.issuer))]
        for key, stored in candidates:
            if stored.same_person(own):
                return Filing(key, own.patient_id)
        if not candidates:
            return self._insert(own, anchor="")
        filing = self._insert(own, anchor=study_uid, conflict=candidates[0][1])
        # A restricted (VIP) patient's ID arriving with another name stays restricted: fail closed.
        self._conn.execute("UPDATE patients SET restricted = (SELECT max(restricted) FROM patients "
                           "WHERE patient_id = ? AND issuer = ?) WHERE id = ?",
                           (own.patient_id, own.issuer, filing.key))
        return filing

    def _insert(self, d: Demographics, anchor: str, conflict: Demographics | None = None) -> Filing:
        taken = {r[0] for r in self._conn.execute(
            "SELECT anchor FROM patients WHERE patient_id = ? AND issuer = ? AND anchor LIKE ? || '%'",
            (d.patient_id, d.issuer, anchor))} if anchor else set()
        # A study shredded and imported again may find its old record kept by studies reconciled into it.
        unique = next(a for n in range(len(taken) + 1)
                      if (a := anchor if n == 0 else f"{anchor}#{n}") not in taken)
        cursor = self._conn.execute(
            "INSERT INTO patients (patient_id, issuer, name, birth_date, sex, anchor) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (d.patient_id, d.issuer, d.name, d.birth_date, d.sex, unique))
        assert cursor.lastrowid is not None
        return Filing(cursor.lastrowid, reference(d.patient_id, unique), conflict)

    def of_study(self, study_uid: str) -> tuple[int, Demographics, str] | None:
        """(key, demographics, reference) of a stored study's patient record."""
        row = self._conn.execute(
            f"SELECT p.id, p.patient_id, p.issuer, p.name, p.birth_date, p.sex, {REFERENCE_SQL} "
            "FROM studies s JOIN patients p ON p.id = s.patient WHERE s.uid = ?", (study_uid,)).fetchone()
        return (row[0], Demographics(*row[1:6]), row[6]) if row else None

    def names(self, references: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """The stored names of the patients the audit trail names by these references (a Patient ID
        two records share has both their names, oldest record first)."""
        marks = ", ".join("?" * len(references))
        found: dict[str, tuple[str, ...]] = {}
        # written so that both halves use the (patient_id, issuer, anchor) index: every image opened asks
        for ref, name in self._conn.execute(
                f"SELECT {REFERENCE_SQL}, p.name FROM patients p WHERE p.patient_id IN ({marks}) "
                f"OR (p.patient_id = '' AND '{NO_ID_PREFIX}' || p.anchor IN ({marks})) ORDER BY p.id",
                references * 2):
            names = found.setdefault(ref, ())
            if name not in names:
                found[ref] = (*names, name)
        return found

    def move_study(self, study_uid: str, key: int) -> None:
        """File a study under another record; the record it leaves goes when it has no study."""
        (old,) = self._conn.execute("SELECT patient FROM studies WHERE uid = ?", (study_uid,)).fetchone()
        self._conn.execute("UPDATE studies SET patient = ? WHERE uid = ?", (key, study_uid))
        self.drop_if_unused(old, successor=key)

    def drop_if_unused(self, key: int, successor: int | None = None) -> None:
        """Remove a record no study is filed under; its restriction and break-glass grants pass to
        ``successor`` (a merged record is restricted if either was)."""
        if self._conn.execute("SELECT 1 FROM studies WHERE patient = ?", (key,)).fetchone():
            return
        if successor is not None:
            self._conn.execute("UPDATE patients SET restricted = max(restricted, (SELECT restricted FROM "
                               "patients WHERE id = ?)) WHERE id = ?", (key, successor))
            self._conn.execute("UPDATE break_glass SET patient = ? WHERE patient = ?", (successor, key))
        else:
            self._conn.execute("DELETE FROM break_glass WHERE patient = ?", (key,))
        self._conn.execute("DELETE FROM patients WHERE id = ?", (key,))

    def reconcile(self, study_uid: str, into_study_uid: str) -> tuple[str, str, int]:
        """File every study of ``study_uid``'s patient record under ``into_study_uid``'s (whose
        demographics are kept); (the moved record's reference, the kept one's, studies moved)."""
        moved, kept = self.of_study(study_uid), self.of_study(into_study_uid)
        if moved is None or kept is None:
            raise CustodianError("Both studies must be in the cache to reconcile their patients.")
        if moved[0] == kept[0]:
            raise CustodianError("These two studies are already filed under the same patient.")
        uids = [uid for (uid,) in self._conn.execute("SELECT uid FROM studies WHERE patient = ?",
                                                     (moved[0],))]
        for uid in uids:
            self.move_study(uid, kept[0])
        return moved[2], kept[2], len(uids)

REDERIVE_KEY = "patients_rederive"  # set by the schema step that keyed patients by record


@dataclass(frozen=True)
class Split:
    """A study that shared a patient record it did not belong to, now under a record of its own."""

    study_uid: str
    reference: str
    was: str  # the reference of the record it shared


def rederive(conn: sqlcipher3.Connection, own_of: Callable[[str], Demographics | None]) -> list[Split]:
    """Once, for a vault from before patients were keyed by record: file again, by what its own
    instances say (``own_of``; None when none can be read, and the study stays), every study
    whose record has no Patient ID or is shared with other studies. The one study whose patient
    a shared record was made for keeps it (or, without an ID, moves to its own); the others are
    the splits. The caller holds the transaction."""
    if conn.execute("SELECT 1 FROM meta WHERE key = ?", (REDERIVE_KEY,)).fetchone() is None:
        return []
    suspects = conn.execute(
        f"SELECT s.uid, p.id, {REFERENCE_SQL}, p.restricted, "
        "(SELECT count(*) FROM studies t WHERE t.patient = p.id), "
        "p.patient_id, p.issuer, p.name, p.birth_date, p.sex "
        "FROM studies s JOIN patients p ON p.id = s.patient "
        "WHERE p.patient_id = '' OR (SELECT count(*) FROM studies t WHERE t.patient = p.id) > 1 "
        "ORDER BY s.imported_at, s.uid").fetchall()
    book, splits, owned = PatientBook(conn), [], set()
    for study_uid, old, was, restricted, sharing, *stored in suspects:
        own = own_of(study_uid)
        if own is None:
            continue
        # the one study whose patient the shared record was made for is moved, not split off
        owner = old not in owned and Demographics(*stored).same_person(own)
        if owner:
            owned.add(old)
        filing = book.file(study_uid, own)
        if filing.key == old:
            continue
        conn.execute("UPDATE patients SET restricted = max(restricted, ?) WHERE id = ?",
                     (restricted, filing.key))
        book.move_study(study_uid, filing.key)
        if sharing > 1 and not owner:
            splits.append(Split(study_uid, filing.reference, was))
    conn.execute("DELETE FROM meta WHERE key = ?", (REDERIVE_KEY,))
    return splits
