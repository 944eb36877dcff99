"""A vault with a film librarian, a privacy officer and one imported CT study."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from app.demo.studies import Patient
from app.media.disclosures import (
    Delivery,
    ExportRequest,
    ExportResult,
    IdentityCheck,
    MediaKind,
    Purpose,
    RecipientKind,
)
from app.security.roles import Role
from tests.conftest import VaultEnv, make_env, study_bytes

PATIENT = Patient("PID-4711", "Kowalski^Anna", "19720304", "F")


@dataclass
class MediaEnv:
    env: VaultEnv
    study_uid: str
    sop_uids: set[str]
    out: Path

    def request(self, name: str = "media.zip", **changes: object) -> ExportRequest:
        fields: dict[str, object] = {
            "studies": (self.study_uid,), "recipient_kind": RecipientKind.PATIENT,
            "recipient": "Anna Kowalski", "purpose": Purpose.PATIENT_REQUEST,
            "identity_check": IdentityCheck.PHOTO_ID, "delivery": Delivery.HANDED_OVER,
            "media": MediaKind.ZIP, "out": self.out / name}
        fields.update(changes)
        return ExportRequest(**fields)  # type: ignore[arg-type]

    def export(self, request: ExportRequest, user: str = "lib") -> ExportResult:
        env = self.env
        return env.vault.disclosure.export(env.login(user), request, env.accounts[user].codes.next())

    def refused(self, request: ExportRequest, user: str = "lib") -> None:
        """An export that must be refused before the step-up: it gets no valid code to spend (an
        authenticator code is good once, and the test clock would have to wait for the next)."""
        self.env.vault.disclosure.export(self.env.login(user), request, "000000")


@pytest.fixture
def media(tmp_path: Path) -> Iterator[MediaEnv]:
    env = make_env(tmp_path / "home")
    env.add("lib", Role.LIBRARIAN)
    env.add("po", Role.PRIVACY_OFFICER)
    env.add("rad", Role.RADIOLOGIST)
    env.add("tech", Role.TECHNOLOGIST)  # who imports (a librarian imports outside media only)
    items = study_bytes(PATIENT, slices=12, size=64, description="CT CHEST KOWALSKI")
    report = env.vault.intake.import_bytes(env.login("tech"), items)
    sop_uids = {str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID) for _, data in items}
    out = tmp_path / "out"
    out.mkdir()
    yield MediaEnv(env, next(iter(report.studies)), sop_uids, out)
    env.vault.close()
