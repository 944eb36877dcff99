"""Records the vault hands out: plain dataclasses, no database handles inside."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class StudySummary:
    """One study as a role may see it: demographics the role may not see are None."""

    study_uid: str
    patient_key: int  # the index's own patient number: tells "same patient" without demographics
    patient_id: str | None
    patient_name: str | None
    study_date: str
    modalities: list[str]
    description: str
    series: int
    instances: int
    accession: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    restricted: bool = False  # a restricted (VIP) patient: demographics hidden, images need break-glass
    # Another patient record has this Patient ID with a different name or birth date: a collision
    # or a typo that someone who may import should reconcile.
    identity_conflict: bool = False

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "patient_key"}


@dataclass(frozen=True)
class SeriesSummary:
    series_uid: str
    study_uid: str
    modality: str
    number: int | None
    description: str
    instances: int
    body_part: str = ""  # Body Part Examined, as stored (hanging protocols match on it)


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)  # stored, but someone should look (identity conflicts)

    def as_dict(self) -> dict[str, object]:
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "rejected": [asdict(r) for r in self.rejected],
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Damage:
    sop_instance_uid: str | None
    reason: str
    study_uid: str | None = None


@dataclass
class VerifyReport:
    instances: int = 0
    ok: int = 0
    damaged: list[Damage] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "instances": self.instances,
            "ok": self.ok,
            "damaged": [
                {k: v for k, v in asdict(d).items() if v is not None or k == "sop_instance_uid"}
                for d in self.damaged
            ],
        }
