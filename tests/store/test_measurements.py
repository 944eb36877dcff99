"""Each reader's measurements in the vault: their own only, kept by the cache, gone with a shred."""

from __future__ import annotations

import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.errors import CustodianError
from app.imaging.measure import Kind, Measurement
from app.security.roles import Role
from tests.conftest import VaultEnv, study_bytes


def _imported(env: VaultEnv) -> tuple[str, str, str]:
    items = study_bytes(slices=2, size=16)
    env.vault.intake.import_bytes(env.login("tech"), items)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_saved_listed_and_deleted_per_reader(env: VaultEnv) -> None:
    _, series_uid, sop_uid = _imported(env)
    env.add("rad2", Role.RADIOLOGIST)
    rad, other = env.login("rad"), env.login("rad2")
    note = env.vault.reading.save_measurement(rad,
                                              Measurement(Kind.TEXT, sop_uid, 0, ((3.0, 4.5),), "nodule?"))
    line = env.vault.reading.save_measurement(rad, Measurement(Kind.DISTANCE, sop_uid, 0, ((1, 2), (9.5, 2))))
    assert note.id is not None and line.id == note.id + 1
    assert env.vault.reading.measurements(rad, series_uid) == [note, line]
    assert env.vault.reading.measurements(other, series_uid) == []  # nobody else's
    env.vault.reading.delete_measurement(other, note.id)  # not theirs: nothing happens
    assert env.vault.reading.measurements(rad, series_uid) == [note, line]
    env.vault.reading.delete_measurement(rad, note.id)
    assert env.vault.reading.measurements(rad, series_uid) == [line]
    with pytest.raises(CustodianError, match="not in the cache"):
        env.vault.reading.save_measurement(rad, Measurement(Kind.TEXT, "1.2.3.4", 0, ((0, 0),), "x"))


def test_shredding_the_study_destroys_its_measurements(env: VaultEnv) -> None:
    study_uid, series_uid, sop_uid = _imported(env)
    env.add("po", Role.PRIVACY_OFFICER)
    rad = env.login("rad")
    env.vault.reading.save_measurement(rad,
                                       Measurement(Kind.TEXT, sop_uid, 0, ((3.0, 4.5),), "Mrs Q. said..."))
    env.vault.admin.shred(env.login("po"), study_uid, "patient's erasure request")
    rows = env.vault._core.query("SELECT count(*) FROM measurements")
    assert rows == [(0,)] and env.vault.reading.measurements(rad, series_uid) == []


def test_saving_and_deleting_are_audited_with_the_patient_and_study(env: VaultEnv) -> None:
    study_uid, _, sop_uid = _imported(env)
    env.add("po", Role.PRIVACY_OFFICER)
    rad = env.login("rad")
    note = env.vault.reading.save_measurement(rad,
                                              Measurement(Kind.TEXT, sop_uid, 0, ((3.0, 4.5),), "nodule?"))
    env.add("rad2", Role.RADIOLOGIST)
    # not theirs: nothing done, nothing audited
    env.vault.reading.delete_measurement(env.login("rad2"), note.id or 0)
    env.vault.reading.delete_measurement(rad, note.id or 0)

    trail = env.vault.trail.show(env.login("po"), AuditQuery())
    events = [(r.type, r.user, r.studies, r.patients, r.detail) for r in reversed(trail)
              if r.type in (EventType.MEASUREMENT_SAVED.value, EventType.MEASUREMENT_DELETED.value)]
    assert events == [
        (EventType.MEASUREMENT_SAVED.value, "rad", (study_uid,), ("PID-0001",),
         {"measurement": note.id, "kind": "text"}),
        (EventType.MEASUREMENT_DELETED.value, "rad", (study_uid,), ("PID-0001",),
         {"measurement": note.id, "kind": "text"})]
