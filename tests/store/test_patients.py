"""Patient identity: a study is shown under its own patient, never under another's name.

Real files with empty or missing Patient IDs (pydicom's test files) and constructed collisions of
one Patient ID with two names, at the vault level; the study list and corner text are in
tests/ui/test_identity.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
import pyzipper
import sqlcipher3
from pydicom.data import get_testdata_file

from app.audit.events import EventType
from app.audit.report import AuditQuery, AuditRecord
from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError, NotPermitted
from app.media.disclosures import ExportResult
from app.security.roles import Role
from app.store import index
from app.store.patients import Demographics, normalised_name
from app.vault import Vault
from tests.conftest import PASSPHRASE, VaultEnv
from tests.media.conftest import MediaEnv

# (file, the name its own header carries) — all without a Patient ID
NO_ID_FILES = [("SC_rgb_jpeg.dcm", ""), ("ExplVR_BigEnd.dcm", "Anonymized"),
               ("reportsi.dcm", "Last Name^First Name"), ("test-SR.dcm", "Test^S R"),
               ("image_dfl.dcm", "^^^^")]


def _real(name: str) -> tuple[str, bytes]:
    path = Path(get_testdata_file(name))
    return name, path.read_bytes()


def _trail(env: VaultEnv, kind: EventType) -> list[AuditRecord]:
    """The audit records of one kind, read by the privacy officer."""
    if "po" not in env.accounts:
        env.add("po", Role.PRIVACY_OFFICER)
    return env.vault.trail.show(env.login("po"), AuditQuery(event_type=kind))


def _study(patient: Patient, **kwargs: object) -> list[tuple[str, bytes]]:
    return [(f"{patient.name}-{i}", to_bytes(ds)) for i, ds in enumerate(ct_study(patient, **kwargs))]


def _uid(items: list[tuple[str, bytes]]) -> str:
    return str(pydicom.dcmread(io.BytesIO(items[0][1]), stop_before_pixels=True).StudyInstanceUID)


def _own_study(name: str) -> str:
    return str(pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True, force=True).StudyInstanceUID)


def test_a_study_without_patient_id_keeps_its_own_demographics(env: VaultEnv) -> None:
    """The defect: every ID-less file was shown under the first ID-less patient's name."""
    first = _study(Patient("", "Citizen^Jan", birth_date="19700101"), slices=2, size=32)
    tech = env.login("tech")
    report = env.vault.intake.import_bytes(tech, first + [_real(name) for name, _ in NO_ID_FILES])
    assert not report.rejected and report.imported == 2 + len(NO_ID_FILES)

    listed = {s.study_uid: s for s in env.vault.reading.studies(env.login("rad"))}
    assert listed[_uid(first)].patient_name == "Citizen^Jan"
    for name, own in NO_ID_FILES:
        study = listed[_own_study(name)]
        assert study.patient_name == own, name
        assert study.birth_date == "" and study.patient_id == ""
        assert not study.identity_conflict
    keys = [s.patient_key for s in listed.values()]
    assert len(set(keys)) == len(keys), "no two ID-less studies share a patient record"


def test_the_same_patient_id_with_another_name_is_flagged_and_never_merged(env: VaultEnv) -> None:
    tech = env.login("tech")
    jan = _study(Patient("PID-42", "Citizen^Jan", birth_date="19700101"), slices=2, size=32)
    same = _study(Patient("PID-42", "CITIZEN^JAN^^", birth_date="19700101"), slices=1, size=32)
    other = _study(Patient("PID-42", "Roe^Jane", birth_date="19850505"), slices=2, size=32)
    assert env.vault.intake.import_bytes(tech, jan).warnings == []
    same_report = env.vault.intake.import_bytes(tech, same)
    assert same_report.warnings == [], "case and empty components are the same name"
    report = env.vault.intake.import_bytes(tech, other)

    assert report.imported == 2 and len(report.warnings) == 1
    warning = report.warnings[0]
    assert "PID-42" in warning and "'Citizen Jan', born 19700101" in warning
    assert "'Roe Jane', born 19850505" in warning
    listed = {s.study_uid: s for s in env.vault.reading.studies(env.login("rad"))}
    assert listed[_uid(jan)].patient_key == listed[_uid(same)].patient_key
    assert listed[_uid(other)].patient_key != listed[_uid(jan)].patient_key
    assert listed[_uid(other)].patient_name == "Roe^Jane" and listed[_uid(jan)].patient_name == "Citizen^Jan"
    assert all(s.identity_conflict for s in listed.values())

    flagged = _trail(env, EventType.PATIENT_RECORD)
    assert len(flagged) == 1 and flagged[0].studies == (_uid(other),) and flagged[0].patients == ("PID-42",)
    assert flagged[0].outcome == 4


def test_an_instance_that_contradicts_its_studys_patient_is_quarantined(env: VaultEnv) -> None:
    tech = env.login("tech")
    datasets = ct_study(Patient("", "Anon^One"), slices=2, size=32)
    env.vault.intake.import_bytes(tech, [("a", to_bytes(datasets[0]))])
    datasets[1].PatientName = "Anon^Two"
    report = env.vault.intake.import_bytes(tech, [("b", to_bytes(datasets[1])),
                                                  ("a-again", to_bytes(datasets[0]))])
    assert report.imported == 0 and report.duplicates == 1
    assert [r.reason for r in report.rejected] == [
        "its study is already cached under the same Patient ID with another name or birth date"]


def test_an_image_naming_another_studys_series_is_quarantined_not_shown_in_it(env: VaultEnv) -> None:
    """A sender reusing a Series Instance UID (hostile or careless) would put one patient's image in
    another patient's series: it is quarantined, arriving later or in the same batch."""
    tech, rad = env.login("tech"), env.login("rad")
    own = ct_study(Patient("PID-SA", "Series^Ann"), slices=2, size=16)
    later, together = (ct_study(Patient(f"PID-S{n}", f"Series^{n}"), slices=1, size=16)[0] for n in "BC")
    fresh = str(own[0].SeriesInstanceUID)
    own[1].SeriesInstanceUID = together.SeriesInstanceUID = later.SeriesInstanceUID = fresh
    first = env.vault.intake.import_bytes(tech, [("ann", to_bytes(own[0])), ("c", to_bytes(together))])
    second = env.vault.intake.import_bytes(tech, [("b", to_bytes(later)), ("ann-2", to_bytes(own[1]))])
    assert (first.imported, second.imported) == (1, 1)
    assert [r.path for r in first.rejected + second.rejected] == ["c", "b"]
    assert {r.reason for r in first.rejected + second.rejected} == {
        "its Series Instance UID is already cached in another study"}
    shown = env.vault.reading.open_frames(rad, fresh).frames
    assert {info.study_uid for info in shown} == {str(own[0].StudyInstanceUID)} and len(shown) == 2


def test_reconciling_two_records_is_an_audited_act_of_an_import_role(env: VaultEnv) -> None:
    tech = env.login("tech")
    right = _study(Patient("PID-7", "Smith^Anna", birth_date="19600101"), slices=1, size=32)
    typo = _study(Patient("PID-7", "Smyth^Anna", birth_date="19600101"), slices=1, size=32)
    env.vault.intake.import_bytes(tech, right + typo)
    with pytest.raises(NotPermitted):
        env.vault.intake.reconcile_patients(env.login("rad"), _uid(typo), _uid(right))

    assert env.vault.intake.reconcile_patients(tech, _uid(typo), _uid(right)) == 1
    listed = {s.study_uid: s for s in env.vault.reading.studies(env.login("rad"))}
    assert listed[_uid(typo)].patient_key == listed[_uid(right)].patient_key
    assert listed[_uid(typo)].patient_name == "Smith^Anna"
    assert not any(s.identity_conflict for s in listed.values())
    with pytest.raises(CustodianError, match="already filed under the same patient"):
        env.vault.intake.reconcile_patients(tech, _uid(typo), _uid(right))
    events = [r for r in _trail(env, EventType.PATIENT_RECORD) if "reconciled" in r.detail]
    assert len(events) == 1 and events[0].user == "tech"
    assert set(events[0].studies) == {_uid(typo), _uid(right)}


def test_a_restricted_patient_id_arriving_with_another_name_stays_restricted(env: VaultEnv) -> None:
    tech = env.login("tech")
    env.vault.intake.import_bytes(tech, _study(Patient("VIP-1", "Famous^Fay"), slices=1, size=32))
    _trail(env, EventType.LOGIN)  # makes the privacy officer
    env.vault.admin.restrict_patient(env.login("po"), "VIP-1")
    typo = _study(Patient("VIP-1", "Famus^Fay"), slices=1, size=32)
    assert len(env.vault.intake.import_bytes(tech, typo).warnings) == 1
    listed = {s.study_uid: s for s in env.vault.reading.studies(env.login("rad"))}
    assert listed[_uid(typo)].restricted and listed[_uid(typo)].patient_name is None


def test_restricting_a_patient_without_an_id_by_its_reference(env: VaultEnv) -> None:
    tech = env.login("tech")
    one = _study(Patient("", "Nameless^One"), slices=1, size=32)
    two = _study(Patient("", "Nameless^Two"), slices=1, size=32)
    env.vault.intake.import_bytes(tech, one + two)
    _trail(env, EventType.LOGIN)  # makes the privacy officer
    env.vault.admin.restrict_patient(env.login("po"), f"noid:{_uid(one)}")
    listed = {s.study_uid: s for s in env.vault.reading.studies(env.login("rad"))}
    assert listed[_uid(one)].restricted and not listed[_uid(two)].restricted


def _export(env: VaultEnv, studies: list[str], out: Path) -> ExportResult:
    """The librarian's export of ``studies`` to ``out`` (the media tests' request and step-up)."""
    if "lib" not in env.accounts:
        env.add("lib", Role.LIBRARIAN)
    media = MediaEnv(env, "", set(), out.parent)
    return media.export(media.request(out.name, studies=tuple(studies)))


def test_media_give_each_patient_without_an_id_its_own_record(env: VaultEnv, tmp_path: Path) -> None:
    tech = env.login("tech")
    one = _study(Patient("", "Nameless^One"), slices=2, size=32)
    two = _study(Patient("", "Nameless^Two"), slices=1, size=32)
    env.vault.intake.import_bytes(tech, one + two)
    result = _export(env, [_uid(one), _uid(two)], tmp_path / "media.zip")

    with pyzipper.AESZipFile(result.out) as zf:
        zf.setpassword(result.passphrase.encode())
        names = zf.namelist()
        files = {n: pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names if n.startswith("DICOM/")}
        directory = pydicom.dcmread(io.BytesIO(zf.read("DICOMDIR")))
    patients = [r for r in directory.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"]
    ids = sorted(str(p.PatientID) for p in patients)
    serial = result.serial
    assert ids == [f"{serial}-1", f"{serial}-2"]
    by_name = {str(p.PatientName): str(p.PatientID) for p in patients}
    assert set(by_name) == {"Nameless^One", "Nameless^Two"}
    for ds in files.values():
        assert ds.PatientID == by_name[str(ds.PatientName)], "each file carries its patient's media ID"

    disclosure = env.vault.disclosure.disclosures(env.login("lib"), f"{serial}-1")
    assert len(disclosure) == 1 and {s.patient_id for s in disclosure[0].studies} == {f"{serial}-1"}
    exported = _trail(env, EventType.EXPORT)
    assert exported and all("unknown" not in json.dumps(r.patients).lower() for r in exported)
    assert sorted(exported[0].patients) == sorted(by_name.values())


def test_media_refuse_two_patients_under_one_patient_id(env: VaultEnv, tmp_path: Path) -> None:
    tech = env.login("tech")
    a = _study(Patient("PID-9", "Alpha^Ann"), slices=1, size=32)
    b = _study(Patient("PID-9", "Beta^Ben"), slices=1, size=32)
    env.vault.intake.import_bytes(tech, a + b)
    with pytest.raises(CustodianError, match="same Patient ID"):
        _export(env, [_uid(a), _uid(b)], tmp_path / "media.zip")
    assert not (tmp_path / "media.zip").exists()


def test_names_compare_as_people_read_them() -> None:
    assert normalised_name("CITIZEN^JAN^^") == normalised_name("Citizen^Jan") == "citizen^jan"
    assert normalised_name("Doe^John=ドウ^ジョン") == "doe^john"
    jan = Demographics("1", "", "Citizen^Jan", "19700101", "M")
    assert jan.same_person(Demographics("1", "", "citizen^jan", "19700101", ""))
    assert not jan.same_person(Demographics("1", "", "", "19700101", "M")), "an empty name differs"
    assert not jan.same_person(Demographics("1", "", "Citizen^Jan", "19700102", "M"))
    assert not jan.same_person(Demographics("1", "SITE-B", "Citizen^Jan", "19700101", "M"))


def test_an_older_vault_is_rederived_and_reports_each_split(env: VaultEnv) -> None:
    """A vault from before schema 16 (one record for every ID-less study, and one Patient ID's
    first name for all its studies): the next opening files each study by its own instances."""
    tech = env.login("tech")
    a = _study(Patient("", "First^Nameless"), slices=1, size=32)
    b = _study(Patient("", "Second^Nameless"), slices=1, size=32)
    c = _study(Patient("PID-5", "Right^Person", birth_date="19500101"), slices=1, size=32)
    d = _study(Patient("PID-5", "Other^Person", birth_date="19990101"), slices=1, size=32)
    env.vault.intake.import_bytes(tech, a + b + c + d)
    conn = env.vault._core.conn
    keys = {uid: conn.execute("SELECT patient FROM studies WHERE uid = ?", (uid,)).fetchone()[0]
            for uid in map(_uid, (a, b, c, d))}
    with index.write_transaction(conn):  # what schema 15 had made of the same imports
        conn.execute("UPDATE patients SET anchor = '' WHERE id = ?", (keys[_uid(a)],))
        conn.execute("UPDATE studies SET patient = ? WHERE uid = ?", (keys[_uid(a)], _uid(b)))
        conn.execute("UPDATE studies SET patient = ? WHERE uid = ?", (keys[_uid(c)], _uid(d)))
        conn.execute("DELETE FROM patients WHERE id IN (?, ?)", (keys[_uid(b)], keys[_uid(d)]))
        conn.execute("INSERT INTO meta (key, value) VALUES ('patients_rederive', 'pending')")
    env.vault.close()

    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    assert len(env.vault.notices) == 1 and env.vault.notices[0].startswith("2 studies")
    env.sessions.clear()
    listed = {s.study_uid: s for s in env.vault.reading.studies(env.login("rad"))}
    assert [listed[_uid(x)].patient_name for x in (a, b, c, d)] == [
        "First^Nameless", "Second^Nameless", "Right^Person", "Other^Person"]
    assert len({listed[_uid(x)].patient_key for x in (a, b, c, d)}) == 4
    assert listed[_uid(d)].identity_conflict and listed[_uid(c)].identity_conflict
    splits = [r for r in _trail(env, EventType.PATIENT_RECORD) if r.user is None]
    assert sorted(s.studies[0] for s in splits) == sorted([_uid(b), _uid(d)])
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    assert env.vault.notices == [], "once only"


def test_schema_16_rebuilds_the_patient_table_of_an_older_index(tmp_path: Path) -> None:
    home = tmp_path / "old"
    home.mkdir()
    key = bytes(range(32))
    conn = sqlcipher3.connect(str(home / index.INDEX_FILE), isolation_level=None)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    index.manifest.register(conn)
    conn.executescript("BEGIN;" + index.SCHEMA + "PRAGMA user_version = 1; COMMIT;")
    for step in range(2, 16):
        conn.executescript(f"BEGIN; {index.MIGRATIONS[step]} PRAGMA user_version = {step}; COMMIT;")
    conn.execute("INSERT INTO data_keys (id, context, kid, wrapped) VALUES (1, 'study/1.2', 'k', x'00')")
    conn.execute("INSERT INTO patients (id, patient_id, name, restricted) VALUES (7, '', 'Shared^Name', 1)")
    conn.execute("INSERT INTO studies (uid, patient, key_id, imported_at) VALUES ('1.2', 7, 1, 0)")
    conn.execute("INSERT INTO users (id, name, role, password_hash, totp_secret, created_at) "
                 "VALUES (1, 'rad', 'radiologist', '', '', 0)")
    conn.execute("INSERT INTO break_glass (user_id, patient, reason, granted_at, expires_at) "
                 "VALUES (1, 7, 'r', 0, 0)")
    conn.close()

    upgraded = index.connect(home, key)
    assert upgraded.execute("PRAGMA user_version").fetchone()[0] == index.SCHEMA_VERSION
    assert upgraded.execute("SELECT id, name, restricted, anchor FROM patients").fetchall() == [
        (7, "Shared^Name", 1, "")]
    pending = upgraded.execute("SELECT value FROM meta WHERE key = 'patients_rederive'").fetchone()
    assert pending == ("pending",)
    assert upgraded.execute("PRAGMA foreign_key_check").fetchall() == []
    assert upgraded.execute("PRAGMA foreign_keys").fetchone() == (1,)
    upgraded.close()
