"""Where a patient's presentation states are in the index (their contents are read decrypted, by
the vault's reading of them: the index does not describe what they refer to)."""

from __future__ import annotations

import sqlcipher3

from app.store.books import StoredInstance, fetch


class StateBook:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def of_patient(self, patient_key: int, sop_classes: tuple[str, ...]) -> list[StoredInstance]:
        """The instances of these classes in every study filed under one patient record."""
        marks = ",".join("?" * len(sop_classes))
        return fetch(self._conn, StoredInstance,
                     "SELECT i.sop_uid, i.study_uid, i.blob, i.sop_class FROM instances i JOIN studies s "
                     f"ON s.uid = i.study_uid WHERE s.patient = ? AND i.sop_class IN ({marks}) "
                     "ORDER BY i.rowid DESC", (patient_key, *sop_classes))
