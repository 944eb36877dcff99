"""Encrypted export media, checked with the readers a recipient uses: 7-Zip, DCMTK, pydicom, xorriso."""

from __future__ import annotations

import hashlib
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.errors import AuthenticationFailed, CustodianError, NotPermitted, UsageError
from app.media.agreements import Agreement
from app.media.deid import DeidOptions
from app.media.disclosures import MediaKind, Purpose, RecipientKind
from app.media.writer import OutputFile
from app.security import totp
from tests.audit.schema import invalid
from tests.conftest import study_bytes
from tests.media.conftest import PATIENT, MediaEnv


def unzip(archive: Path, passphrase: str, into: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["7z", "x", "-y", f"-p{passphrase}", f"-o{into}", str(archive)],
                          capture_output=True, text=True, timeout=120, check=False)


def read_media(root: Path) -> list[pydicom.Dataset]:
    """Every instance DICOMDIR lists, read through pydicom's FileSet; DCMTK must read them too."""
    assert subprocess.run(["dcmdump", "-q", str(root / "DICOMDIR")], capture_output=True,
                          timeout=60).returncode == 0
    fileset = FileSet(pydicom.dcmread(root / "DICOMDIR"))
    datasets = []
    for instance in fileset:
        ds = instance.load()
        assert ds.SOPInstanceUID == instance.ReferencedSOPInstanceUIDInFile
        assert instance.path.startswith(str(root / "DICOM"))
        assert subprocess.run(["dcmdump", "-q", "+E", instance.path], capture_output=True,
                              timeout=60).returncode == 0
        datasets.append(ds)
    return datasets


def test_usb_zip_opens_with_7zip_and_reads_with_dcmtk_and_pydicom(media: MediaEnv, tmp_path: Path) -> None:
    result = media.export(media.request())
    archive = media.out / "media.zip"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == result.sha256
    assert result.instances == 12 and len(result.passphrase.split("-")) == 6
    assert b"Kowalski" not in archive.read_bytes() and b"PID-4711" not in archive.read_bytes()

    listing = subprocess.run(["7z", "l", "-slt", str(archive)], capture_output=True, text=True, timeout=60)
    assert "Method = AES-256 Store" in listing.stdout  # WinZip AE, AES-256

    assert unzip(archive, "wrong-horse-battery-staple", tmp_path / "wrong").returncode != 0
    opened = unzip(archive, result.passphrase, tmp_path / "open")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    root = tmp_path / "open"
    assert "Portable Data for Imaging" in (root / "README.TXT").read_text()
    datasets = read_media(root)
    assert {str(ds.SOPInstanceUID) for ds in datasets} == media.sop_uids
    assert {str(ds.PatientID) for ds in datasets} == {PATIENT.patient_id}
    assert all(ds.pixel_array.shape == (64, 64) for ds in datasets)


def test_cd_image_carries_the_archive_and_a_readme_without_phi(media: MediaEnv, tmp_path: Path) -> None:
    result = media.export(media.request("disc.iso", media=MediaKind.ISO))
    image = media.out / "disc.iso"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == result.sha256
    listing = subprocess.run(["xorriso", "-indev", str(image), "-ls", "/"], capture_output=True,
                             text=True, timeout=60)
    assert "'IMAGES.ZIP'" in listing.stdout and "'README.TXT'" in listing.stdout, listing.stdout
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(image), "-extract", "/", str(tmp_path / "cd")],
                   capture_output=True, timeout=60, check=True)
    readme = (tmp_path / "cd" / "README.TXT").read_text()
    assert result.serial in readme and "Kowalski" not in readme
    assert unzip(tmp_path / "cd" / "IMAGES.ZIP", result.passphrase, tmp_path / "open").returncode == 0
    assert len(read_media(tmp_path / "open")) == 12


def test_disclosure_is_recorded_audited_and_accounted(media: MediaEnv, tmp_path: Path) -> None:
    result = media.export(media.request(
        purpose=Purpose.AUTHORIZATION, recipient="Smith & Co attorneys", label="Kowalski v. Hospital",
        recipient_kind=RecipientKind.THIRD_PARTY, authorization="AUTH-2026-17"))
    vault, po = media.env.vault, media.env.login("po")
    [record] = vault.disclosure.disclosures(po, PATIENT.patient_id)
    assert (record.id, record.serial, record.sha256) == (result.disclosure_id, result.serial, result.sha256)
    assert (record.recipient, record.purpose, record.authorization) == \
        ("Smith & Co attorneys", "authorization", "AUTH-2026-17")
    assert (record.user, record.media, record.instances) == ("lib", "zip", 12)
    assert record.identity_check == "photo-id"
    assert [s.study_uid for s in record.studies] == [media.study_uid]
    assert vault.disclosure.disclosures(po, "SOMEONE-ELSE") == []

    exports = vault.trail.show(po, AuditQuery(event_type=EventType.EXPORT))
    assert [e.detail["serial"] for e in exports] == [result.serial]
    message = dict(vault._gate._audit.messages())[exports[0].seq]
    assert "110106" in message and "110154" in message and "110030" in message  # Export, media, USB
    assert invalid([message]) == {}


def test_refused_exports_leave_nothing_behind(media: MediaEnv) -> None:
    with pytest.raises(NotPermitted, match="may not export"):
        media.refused(media.request(), user="rad")
    with pytest.raises(UsageError, match="authorization"):
        media.request(recipient_kind=RecipientKind.THIRD_PARTY)
    with pytest.raises(NotPermitted, match="de-identification"):
        media.refused(media.request(purpose=Purpose.RESEARCH))
    assert list(media.out.iterdir()) == []
    po = media.env.login("po")
    assert media.env.vault.disclosure.disclosures(po, PATIENT.patient_id) == []
    refusals = media.env.vault.trail.show(po, AuditQuery(event_type=EventType.EXPORT))
    assert len(refusals) == 1 and "de-identification" in str(refusals[0].detail["why"])


def test_business_associates_need_an_agreement_in_force(media: MediaEnv) -> None:
    vault, po = media.env.vault, media.env.login("po")
    to_ba = media.request(recipient_kind=RecipientKind.BUSINESS_ASSOCIATE, recipient="CloudRead Ltd",
                          purpose=Purpose.OPERATIONS)
    with pytest.raises(NotPermitted, match="no business associate agreement"):
        media.refused(to_ba)
    today = date.today()
    vault.disclosure.add_agreement(po, Agreement("CloudRead Ltd", "BAA-9",
                                                 (today - timedelta(days=400)).isoformat(),
                                      (today - timedelta(days=1)).isoformat()))
    with pytest.raises(NotPermitted, match="expired on"):
        media.refused(to_ba)
    assert list(media.out.iterdir()) == []

    vault.disclosure.add_agreement(po, Agreement("cloudread ltd", "BAA-10", today.isoformat(),
                                      (today + timedelta(days=365)).isoformat()))
    media.export(to_ba)
    assert [a.status(today) for a in vault.disclosure.agreements(po)] == ["in force"]
    vault.disclosure.revoke_agreement(po, "CloudRead Ltd", "contract ended early")
    with pytest.raises(NotPermitted, match="revoked"):
        media.refused(media.request("again.zip", recipient_kind=RecipientKind.BUSINESS_ASSOCIATE,
                                   recipient="CloudRead Ltd", purpose=Purpose.OPERATIONS))
    with pytest.raises(NotPermitted):
        vault.disclosure.add_agreement(media.env.login("lib"),
                                       Agreement("X", "Y", "2026-01-01", "2027-01-01"))


def test_site_limit_on_export_size(media: MediaEnv) -> None:
    policy = media.env.vault.admin.set_policy(media.env.login("admin"), "export_max_mb", "1")
    assert policy.export_max_mb == 1
    big = media.env.vault.intake.import_bytes(media.env.login("tech"),
                                              study_bytes(PATIENT, slices=20, size=256))
    with pytest.raises(NotPermitted, match="limit of 1 MB"):
        media.refused(media.request(studies=tuple(big.studies)))
    assert list(media.out.iterdir()) == []


def test_deidentified_export_is_consistent_and_names_nobody(media: MediaEnv, tmp_path: Path) -> None:
    options = DeidOptions(retain_dates=True, clean_descriptors=True)
    result = media.export(media.request(purpose=Purpose.RESEARCH, recipient="Imaging research group",
                                        recipient_kind=RecipientKind.PROVIDER, deidentify=options))
    assert unzip(media.out / "media.zip", result.passphrase, tmp_path / "open").returncode == 0
    datasets = read_media(tmp_path / "open")
    assert len(datasets) == 12
    original = media.env.vault.reading.studies(media.env.login("lib"))[0]
    for ds in datasets:
        text = repr(ds)
        assert "Kowalski" not in text and PATIENT.patient_id not in text and PATIENT.birth_date not in text
        assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107", "113105"]
        assert ds.StudyInstanceUID != media.study_uid and "StudyDescription" not in ds  # it named her
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1 and len({ds.PatientID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 12
    shifted = {ds.StudyDate for ds in datasets}
    assert len(shifted) == 1 and shifted != {original.study_date}
    assert all(ds.ContentDate == ds.StudyDate for ds in datasets if "ContentDate" in ds)
    [record] = media.env.vault.disclosure.disclosures(media.env.login("po"), PATIENT.patient_id)
    assert record.deidentified


def test_an_interrupted_export_leaves_no_media_and_no_disclosure(media: MediaEnv,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: OutputFile) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(OutputFile, "publish", fail)
    with pytest.raises(CustodianError, match="could not be written: No space left"):
        media.export(media.request())
    assert list(media.out.iterdir()) == []
    assert media.env.vault.disclosure.disclosures(media.env.login("po"), PATIENT.patient_id) == []
    exports = media.env.vault.trail.show(media.env.login("po"), AuditQuery(event_type=EventType.EXPORT))
    assert [e.outcome for e in exports] == [8]  # the abandoned media is in the trail


def test_media_written_before_a_crash_is_accounted_for_next_time(media: MediaEnv,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the media got its name but before the record was settled: the next look at the
    disclosures finds the media in place and unchanged, and counts it."""
    from app.vault import disclosure

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(disclosure, "_settle", crash)
        with pytest.raises(KeyboardInterrupt):
            media.export(media.request())
    [record] = media.env.vault.disclosure.disclosures(media.env.login("po"), PATIENT.patient_id)
    assert record.state == "made" and (media.out / "media.zip").exists()


def test_one_user_exporting_many_patients_raises_an_alert(media: MediaEnv, tmp_path: Path) -> None:
    vault = media.env.vault
    vault.admin.set_policy(media.env.login("admin"), "anomaly_exports_per_day", "1")
    other = vault.intake.import_bytes(media.env.login("tech"), study_bytes(Patient("PID-0042", "Other^Olga"),
                                                                   slices=2, size=16))
    result = media.export(media.request(
        studies=(media.study_uid, *other.studies), recipient="Insurer", authorization="AUTH-1",
        recipient_kind=RecipientKind.THIRD_PARTY, purpose=Purpose.AUTHORIZATION))
    assert unzip(media.out / "media.zip", result.passphrase, tmp_path / "open").returncode == 0
    datasets = read_media(tmp_path / "open")  # two patients, each with their own branch
    assert sorted(str(ds.PatientID) for ds in datasets) == ["PID-0042"] * 2 + [PATIENT.patient_id] * 12
    found = vault.trail.show(media.env.login("po"), AuditQuery(event_type=EventType.SECURITY_ALERT))
    alerts = [r for r in found if r.detail.get("alert") == "unusual export volume"]
    assert [(a.user, a.detail["patients_exported_last_day"]) for a in alerts] == [("lib", 2)]
    [record] = vault.disclosure.disclosures(media.env.login("po"), "PID-0042")
    assert [s.patient_id for s in record.studies] == ["PID-0042"]  # the other patient's study is not listed


def test_pydicom_test_files_of_other_kinds_are_listed_and_readable(media: MediaEnv, tmp_path: Path) -> None:
    """A structured report and a JPEG-compressed image from pydicom's test data, beside the CT."""
    vault, tech = media.env.vault, media.env.login("tech")
    names = ("test-SR.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm")
    report = vault.intake.import_paths(tech, [Path(get_testdata_file(name)) for name in names])
    assert report.imported == 3, report.rejected
    result = media.export(media.request(studies=(media.study_uid, *report.studies), recipient="Dr Who",
                                        recipient_kind=RecipientKind.PROVIDER, purpose=Purpose.TREATMENT))
    assert unzip(media.out / "media.zip", result.passphrase, tmp_path / "open").returncode == 0
    datasets = read_media(tmp_path / "open")
    assert len(datasets) == 15
    records = {r.ReferencedSOPInstanceUIDInFile: r.DirectoryRecordType
               for r in pydicom.dcmread(tmp_path / "open" / "DICOMDIR").DirectoryRecordSequence
               if "ReferencedSOPInstanceUIDInFile" in r}
    assert sorted(set(records.values())) == ["IMAGE", "SR DOCUMENT"]


def test_a_wrong_or_replayed_step_up_code_refuses_an_otherwise_valid_export(media: MediaEnv) -> None:
    env = media.env
    session = env.login("lib", fresh=True)
    codes = env.accounts["lib"].codes
    spent = totp.current_code(codes.secret, at=codes.step * totp.STEP)  # the login's own code
    now = time.time()
    accepted = {totp.current_code(codes.secret, now + drift) for drift in (-totp.STEP, 0, totp.STEP)}
    wrong = next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in accepted)
    for code, why in ((spent, "replayed"), (wrong, "wrong")):
        with pytest.raises(AuthenticationFailed):
            env.vault.disclosure.export(session, media.request(), code)
        assert list(media.out.iterdir()) == [], f"a {why} code left media behind"
    po = env.login("po")
    assert env.vault.disclosure.disclosures(po, PATIENT.patient_id) == []
    failures = [e for e in env.vault.trail.show(po, AuditQuery(event_type=EventType.LOGIN))
                if e.outcome and e.detail.get("step_up")]
    assert len(failures) == 2 and {e.user for e in failures} == {"lib"}
    media.export(media.request())  # the same request with a fresh code: it was only the code
    assert len(env.vault.disclosure.disclosures(po, PATIENT.patient_id)) == 1


def test_the_accounting_covers_six_years_and_no_more(media: MediaEnv,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """HIPAA 164.528: disclosures of the six years before the request (leap days included)."""
    day, serials = 24 * 3600, []
    for name, age in (("inside.zip", 6 * 365 + 1 - 1), ("outside.zip", 6 * 365 + 1 + 1)):
        moment = time.time() - age * day
        monkeypatch.setattr("app.media.disclosures.time", SimpleNamespace(time=lambda m=moment: m,
                                                                         strftime=time.strftime))
        serials.append(media.export(media.request(name)).serial)
    monkeypatch.undo()
    records = media.env.vault.disclosure.disclosures(media.env.login("po"), PATIENT.patient_id)
    assert [r.serial for r in records] == serials[:1]
    po = media.env.login("po")
    assert len(media.env.vault.disclosure.disclosures(po, PATIENT.patient_id, years=7)) == 2
