"""Disclosures: what left the hospital on media, to whom and why (HIPAA 164.528).

A disclosure is written as *pending* before its media appears under its final name and marked
*made* once it is there, so there is never media without a record; a record whose media never
appeared (the export was killed) is settled as *abandoned* and is not part of the accounting.
The index refuses to delete disclosures or to change one that is settled.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import sqlcipher3

from app.documents import letter_pdf, tabular_pdf
from app.errors import UsageError

RETENTION_YEARS = 6  # 164.528(a): the accounting covers the six years before the request


@dataclass(frozen=True)
class DeidOptions:
    """How a de-identified export is made (app.media.deid does it; kept here, with the request that
    carries it, so that the policy and the accounting load without pydicom)."""

    retain_dates: bool = False  # shift dates per patient instead of removing them
    clean_descriptors: bool = False  # keep study/series descriptions that name nobody


class RecipientKind(StrEnum):
    PATIENT = "patient"  # the patient or their personal representative
    PROVIDER = "provider"  # another provider, for treatment
    THIRD_PARTY = "third-party"  # an attorney, insurer or other party, with the patient's authorization
    BUSINESS_ASSOCIATE = "business-associate"


class Purpose(StrEnum):
    TREATMENT = "treatment"
    PATIENT_REQUEST = "patient-request"
    AUTHORIZATION = "authorization"  # under a signed authorization (its reference is required)
    LEGAL = "legal"  # subpoena or court order (its reference is required)
    RESEARCH = "research"
    TEACHING = "teaching"
    OPERATIONS = "operations"


class IdentityCheck(StrEnum):
    """How the requester's identity was verified before release."""

    PHOTO_ID = "photo-id"
    KNOWN_TO_STAFF = "known-to-staff"
    CALLBACK = "callback"  # a call back to the number on file
    SIGNED_REQUEST = "signed-request"
    PROVIDER_DIRECTORY = "provider-directory"


class Delivery(StrEnum):
    """How the passphrase reaches the recipient: always apart from the media."""

    HANDED_OVER = "handed-over"
    PHONE = "phone"
    COVER_LETTER = "cover-letter"  # printed, sent separately
    SEPARATE_EMAIL = "separate-email"


class MediaKind(StrEnum):
    ZIP = "zip"  # USB stick or e-mail
    ISO = "iso"  # CD/DVD image


@dataclass(frozen=True)
class ExportRequest:
    studies: tuple[str, ...]
    recipient_kind: RecipientKind
    recipient: str
    purpose: Purpose
    identity_check: IdentityCheck
    delivery: Delivery
    media: MediaKind
    out: Path
    authorization: str = ""  # authorization, subpoena or request reference
    label: str = ""
    deidentify: DeidOptions | None = None  # None: identified (the usual case: the patient's own images)

    def __post_init__(self) -> None:
        if not self.studies:
            raise UsageError("Choose at least one study to export.")
        if not self.recipient.strip():
            raise UsageError("Name the recipient (person or organisation).")
        needs_reference = self.recipient_kind is RecipientKind.THIRD_PARTY or \
            self.purpose in (Purpose.AUTHORIZATION, Purpose.LEGAL)
        if needs_reference and not self.authorization.strip():
            raise UsageError("This disclosure needs the reference of the patient's signed authorization "
                             "or of the legal order (--authorization).")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    sha256: str
    disclosure_id: int
    serial: str
    instances: int
    size: int
    passphrase: str  # shown once, never stored
    review: int = 0  # de-identified instances that may carry burnt-in text: look before handing over
    # instances the media could not carry (undecodable pixel data, not de-identifiable): (SOP
    # Instance UID, reason); the rest of the export went ahead and the disclosure counts only those
    left_out: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"out": str(self.out), "sha256": self.sha256, "disclosure_id": self.disclosure_id,
                "serial": self.serial, "instances": self.instances, "bytes": self.size,
                "passphrase": self.passphrase, "burnt_in_review": self.review,
                "left_out": [{"sop_instance_uid": uid, "reason": why} for uid, why in self.left_out]}


@dataclass(frozen=True)
class DisclosedStudy:
    study_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    study_date: str
    description: str


@dataclass(frozen=True)
class Disclosure:
    id: int
    serial: str
    at: float
    user: str
    recipient_kind: str
    recipient: str
    purpose: str
    authorization: str
    identity_check: str
    delivery: str
    media: str
    label: str
    instances: int
    size: int
    sha256: str
    deidentified: bool
    state: str
    studies: list[DisclosedStudy] = field(default_factory=list)

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M UTC")

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "serial": self.serial, "at": self.when, "user": self.user,
                "recipient_kind": self.recipient_kind, "recipient": self.recipient,
                "purpose": self.purpose, "authorization": self.authorization,
                "identity_check": self.identity_check, "passphrase_delivery": self.delivery,
                "media": self.media, "label": self.label, "instances": self.instances,
                "bytes": self.size, "sha256": self.sha256, "deidentified": self.deidentified,
                "studies": [s.study_uid for s in self.studies],
                "descriptions": [f"{s.study_date} {s.description}".strip() for s in self.studies]}


def new_serial() -> str:
    """A media serial for the label and the record: date plus a random part."""
    return f"CUS-{time.strftime('%Y%m%d')}-{secrets.token_hex(3).upper()}"


_COLUMNS = ("id, serial, at, user, recipient_kind, recipient, purpose, authorization, identity_check, "
            "delivery, media, label, instances, size, sha256, deidentified, state")


class DisclosureBook:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def open_pending(self, request: ExportRequest, serial: str, user: str, instances: int, size: int,
                     sha256: str, studies: list[DisclosedStudy], media: str | None = None) -> int:
        """``media``: what carried it when that was no media kind (a copied or saved image)."""
        cursor = self._conn.execute(
            "INSERT INTO disclosures (serial, at, user, recipient_kind, recipient, purpose, authorization, "
            "identity_check, delivery, media, label, instances, size, sha256, deidentified, state, out) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (serial, time.time(), user, request.recipient_kind.value, request.recipient.strip(),
             request.purpose.value, request.authorization.strip(), request.identity_check.value,
             request.delivery.value, media or request.media.value, request.label, instances, size, sha256,
             int(request.deidentify is not None), str(request.out)))
        disclosure_id = int(cursor.lastrowid)
        self._conn.executemany(
            "INSERT INTO disclosed_studies (disclosure, study_uid, patient_id, issuer, patient_name, "
            "study_date, description) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(disclosure_id, s.study_uid, s.patient_id, s.issuer, s.patient_name, s.study_date,
              s.description) for s in studies])
        return disclosure_id

    def settle(self, disclosure_id: int, made: bool) -> None:
        self._conn.execute("UPDATE disclosures SET state = ? WHERE id = ? AND state = 'pending'",
                           ("made" if made else "abandoned", disclosure_id))

    def pending(self) -> list[tuple[int, str, str]]:
        """(id, output path, SHA-256) of disclosures whose media was not confirmed."""
        return [(int(i), str(out), str(digest)) for i, out, digest in self._conn.execute(
            "SELECT id, out, sha256 FROM disclosures WHERE state = 'pending'")]

    def get(self, disclosure_id: int) -> Disclosure:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM disclosures WHERE id = ?",
                                 (disclosure_id,)).fetchone()
        return self._with_studies([_disclosure(row)])[0]

    def for_patient(self, patient_id: str, since: float) -> list[Disclosure]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM disclosures WHERE state = 'made' AND at >= ? AND id IN "
            "(SELECT disclosure FROM disclosed_studies WHERE patient_id = ?) ORDER BY at",
            (since, patient_id)).fetchall()
        return self._with_studies([_disclosure(r) for r in rows], patient_id)

    def _with_studies(self, items: list[Disclosure], patient_id: str | None = None) -> list[Disclosure]:
        for item in items:
            sql = ("SELECT study_uid, patient_id, issuer, patient_name, study_date, description "
                   "FROM disclosed_studies WHERE disclosure = ?")
            params: tuple[object, ...] = (item.id,)
            if patient_id is not None:  # another patient on the same media is not this one's business
                sql += " AND patient_id = ?"
                params += (patient_id,)
            item.studies.extend(DisclosedStudy(*row) for row in self._conn.execute(sql, params))
        return items


def _disclosure(row: tuple[object, ...]) -> Disclosure:
    values = list(row)
    values[15] = bool(values[15])
    return Disclosure(*values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Accounting:
    """A patient's accounting of disclosures (HIPAA 164.528)."""

    patient_id: str
    disclosures: list[Disclosure]
    made_by: str
    made_at: datetime
    years: int = RETENTION_YEARS

    COLUMNS = ("Date (UTC)", "Recipient", "Type", "Purpose", "Authorization", "Studies", "Media", "Serial")

    def rows(self) -> list[list[str]]:
        return [[d.when, d.recipient, d.recipient_kind, d.purpose, d.authorization,
                 "; ".join(f"{s.study_date} {s.description}".strip() or s.study_uid for s in d.studies),
                 f"{d.media}{' (de-identified)' if d.deidentified else ''}", d.serial]
                for d in self.disclosures]

    def header_lines(self) -> list[str]:
        return [f"Patient ID: {self.patient_id}",
                f"Disclosures on media in the {self.years} years before "
                f"{self.made_at:%Y-%m-%d}: {len(self.disclosures)}",
                f"Prepared by {self.made_by} on {self.made_at:%Y-%m-%d %H:%M} UTC.",
                "Each entry gives the date, the recipient, a description of what was disclosed and the "
                "purpose (45 CFR 164.528(b))."]

    def to_pdf(self) -> bytes:
        return tabular_pdf(f"Accounting of disclosures: {self.patient_id}", self.header_lines(), self.COLUMNS,
                           self.rows(), (30, 42, 28, 28, 30, 62, 28, 29))


@dataclass(frozen=True)
class Letter:
    """A one-page letter; ``emphasis`` is printed large after the paragraph ending in a colon."""

    title: str
    paragraphs: tuple[str, ...]
    emphasis: str


def cover_letter_text(result: ExportResult, institution: str) -> Letter:
    """The passphrase on paper, to send apart from the media. It names nobody (the recipient's
    name may be the patient's): the envelope carries the address, the letter holds no PHI."""
    return Letter(f"Passphrase for media {result.serial}", (
        f"From: {institution}, {datetime.now(UTC):%Y-%m-%d}",
        "You are receiving medical images on encrypted media, sent separately from this letter. "
        "To open the file IMAGES.ZIP (or the .zip file you received), use 7-Zip, WinZip or Keka and "
        "enter this passphrase, exactly as printed, with the dashes:",
        "Keep this letter apart from the media, and destroy it once the images are opened. "
        "If you did not expect these images, contact the sender.",
    ), result.passphrase)


def cover_letter(result: ExportResult, institution: str) -> bytes:
    """The cover letter as a PDF file (the CLI's and the wizard's "Save cover letter")."""
    letter = cover_letter_text(result, institution)
    return letter_pdf(letter.title, letter.paragraphs, emphasis=letter.emphasis)
