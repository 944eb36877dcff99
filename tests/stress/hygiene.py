"""Secrets hygiene after a whole working day in one vault: import, reading (images, thumbnails,
a measurement note), an export to the patient, a backup, and the audit trail sent to a real
rsyslog over TLS. No file under the home, the media, the backup or the temporary directory may
hold a patient's name or ID, a UID, pixel bytes, the note or any key (vault or TLS) in plaintext.

Shared by the CI test (tests/stress/test_hygiene.py) and the long runner (tests/stress/run.py).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from app.audit.repository import Repository
from app.demo.studies import Patient
from app.imaging.measure import Kind, Measurement
from app.media.disclosures import Delivery, ExportRequest, IdentityCheck, MediaKind, Purpose, RecipientKind
from app.security.roles import Role
from tests.conftest import VaultEnv, study_bytes
from tests.peers.pki import Site
from tests.peers.rsyslog import Rsyslog


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in ([root] if root.is_file() else root.rglob("*"))
            if p.is_file()]


def _sync_audit(env: VaultEnv, folder: Path) -> list[bytes]:
    """The day's audit trail sent to the central repository (mutual TLS); the workstation's TLS
    private key, which must not be left in a file either. Nothing when rsyslog is not installed."""
    if shutil.which("rsyslogd") is None and not Path("/usr/sbin/rsyslogd").exists():
        return []
    site = Site(folder, "audit.hospital.test")
    repository = Rsyslog(folder / "rsyslog", site.ca.cert, site.server)
    repository.start()
    try:
        env.vault.trail.set_repository(env.login("admin"), Repository(
            "127.0.0.1", repository.port, site.identity(), "audit.hospital.test"))
        assert env.vault.trail.forwarder().drain().status.pending == 0
    finally:
        repository.stop()
    key = site.client.key.read_bytes()
    body = b"".join(key.splitlines()[1:-1])
    return [body[:48], body[len(body) // 2:][:48]]  # two runs of the key's base64 body


@dataclass
class Hygiene:
    files: int = 0  # files scanned
    needles: int = 0  # secrets looked for
    leaks: list[str] = field(default_factory=list)  # "what, where" without the secret itself


def working_day(env: VaultEnv, tmp_path: Path) -> Hygiene:
    """``env`` has a radiologist (rad) and a technologist (tech) besides the administrator."""
    temp = Path(tempfile.gettempdir())
    before = {p for p in temp.iterdir()} if temp.exists() else set()
    marker = secrets.token_hex(4).upper()
    patient = Patient(f"PID-{marker}", f"Hygiene{marker}^Hanna")
    items = study_bytes(patient, slices=4, size=64)
    first = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    note = f"spiculated nodule {marker}"

    env.vault.intake.import_bytes(env.login("tech"), items)
    env.add("films", Role.LIBRARIAN)
    rad = env.login("rad")
    images = env.vault.reading.open_series(rad, first.SeriesInstanceUID)
    images.render(2)
    assert env.vault.reading.thumbnails(rad, first.StudyInstanceUID)
    (tmp_path / "out").mkdir(parents=True)
    env.vault.reading.save_measurement(rad,
                                       Measurement(Kind.TEXT, first.SOPInstanceUID, 0, ((10.0, 12.0),), note))
    media = env.vault.disclosure.export(env.login("films"), ExportRequest(
        (first.StudyInstanceUID,), RecipientKind.PATIENT, "The patient herself", Purpose.PATIENT_REQUEST,
        IdentityCheck.PHOTO_ID, Delivery.HANDED_OVER, MediaKind.ZIP, tmp_path / "out" / "media.zip"),
        env.accounts["films"].codes.next())
    backup = env.vault.admin.backup(env.login("admin"), tmp_path / "day.backup",
                                    "a backup passphrase for today")
    tls_key = _sync_audit(env, tmp_path / "central")

    keys = [*env.vault._core.keys.masters.values(), env.vault._core.keys.index_key]
    needles = [patient.name.encode(), f"Hygiene{marker}".encode(), patient.patient_id.encode(),
               first.StudyInstanceUID.encode(), first.SeriesInstanceUID.encode(),
               first.SOPInstanceUID.encode(),
               bytes(first.PixelData[2000:2032]), note.encode(), marker.encode(), media.passphrase.encode(),
               *keys, *(base64.b64encode(k) for k in keys), *(k.hex().encode() for k in keys), *tls_key]
    new_temp = [p for p in temp.iterdir() if p not in before] if temp.exists() else []
    scanned = _files(env.home, media.out, backup.path, *new_temp)
    assert media.out in scanned and backup.path in scanned
    found = Hygiene(len(scanned), len(needles))
    for path in scanned:
        data = path.read_bytes()
        found.leaks += [f"secret {n} in {path.relative_to(path.anchor)}" for n, needle in enumerate(needles)
                        if needle in data]
    if os.stat(env.home).st_mode & 0o077:
        found.leaks.append("the home is open to other OS users")
    return found
