"""Series thumbnails from the vault: the middle image as displayed, audited, none for a
restricted patient without break-glass and none for a role that may not view images."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import ct_phantom
from app.errors import NotPermitted
from app.security.roles import Role
from tests.conftest import VaultEnv, study_bytes

SIZE, SLICES = 128, 5


def _study(env: VaultEnv) -> pydicom.Dataset:
    items = study_bytes(slices=SLICES, size=SIZE)
    env.vault.intake.import_bytes(env.login("tech"), items)
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))


def _reads(env: VaultEnv, user: str) -> list:
    return env.vault._gate._audit.records(AuditQuery(user=user, event_type=EventType.INSTANCES_READ))


def test_the_middle_image_windowed_and_shrunk(env: VaultEnv) -> None:
    ds = _study(env)
    rad = env.login("rad")
    pictures = env.vault.reading.thumbnails(rad, ds.StudyInstanceUID, size=32)
    assert list(pictures) == [ds.SeriesInstanceUID]
    # The expected picture, independently: the middle slice in HU through the stored 40/400 window
    # (PS3.3 C.11.2.1.2), averaged in 4×4 blocks.
    hu = ct_phantom(SIZE, SLICES // 2).astype(float) - 1024
    shown = np.clip(((hu - 39.5) / 399 + 0.5) * 255, 0, 255)
    expected = shown.reshape(32, 4, 32, 4).mean(axis=(1, 3))
    assert np.abs(pictures[ds.SeriesInstanceUID].astype(float) - expected).max() <= 1.5
    (read,) = _reads(env, "rad")
    assert read.detail == {"thumbnails": 1} and read.patients == ("PID-0001",)


def test_restricted_patient_needs_break_glass_and_other_roles_get_none(env: VaultEnv) -> None:
    ds = _study(env)
    env.add("privacy", Role.PRIVACY_OFFICER)
    env.add("films", Role.LIBRARIAN)
    env.vault.admin.restrict_patient(env.login("privacy"), "PID-0001")
    rad = env.login("rad")
    # Browsing past the study decrypts nothing and is no attempt to open it: no alert either.
    assert env.vault.reading.thumbnails(rad, ds.StudyInstanceUID) == {}
    assert not [r for r in env.vault._gate._audit.records() if r.user == "rad" and r.type in (
        EventType.INSTANCES_READ.value, EventType.ACCESS_REFUSED.value, EventType.SECURITY_ALERT.value)]
    env.vault.reading.break_glass(rad, ds.StudyInstanceUID, "trauma bay, unconscious patient",
                          env.accounts["rad"].codes.next())
    assert list(env.vault.reading.thumbnails(rad, ds.StudyInstanceUID)) == [ds.SeriesInstanceUID]
    with pytest.raises(NotPermitted):
        env.vault.reading.thumbnails(env.login("films"), ds.StudyInstanceUID)
    refused = env.vault._gate._audit.records(AuditQuery(user="films", event_type=EventType.ACCESS_REFUSED))
    assert refused and refused[0].detail["action"] == "view images"
    assert env.vault.reading.thumbnails(rad, "1.2.3.999") == {}  # not in the cache
