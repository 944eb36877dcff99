"""Phrases the reading window composes: counted nouns, and the patient and study lines in a
viewport's top corners."""

from __future__ import annotations

from app.store.records import SeriesSummary, StudySummary
from app.ui.dicom_text import iso_date


def counted(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def corner_lines(study: StudySummary | None,
                 series: SeriesSummary | None) -> tuple[list[str], list[str]]:
    """Top-left patient and top-right study lines, from what the vault let this role see."""
    if study is None:
        return [], []
    born = " ".join(p for p in (iso_date(study.birth_date) if study.birth_date else "",
                                study.sex or "") if p)
    patient = [study.patient_name.replace("^", " ").strip() if study.patient_name else "",
               ("ID " + (study.patient_id or "(none)")) if study.patient_id is not None else "", born,
               "\u26a0 ID also names another patient" if study.identity_conflict else ""]
    described = [iso_date(study.study_date), study.description,
                 f"Acc {study.accession}" if study.accession else "",
                 " ".join(p for p in (f"Se {series.number}" if series and series.number is not None
                                      else "", series.description if series else "") if p)]
    return [line for line in patient if line], [line for line in described if line]
