"""Hanging: the patient's studies in time, and which prior a radiologist wants beside the current one."""

from __future__ import annotations

from collections.abc import Iterable

from app.store.records import StudySummary

# Viewport layouts, rows × columns, smallest first.
LAYOUTS: dict[str, tuple[int, int]] = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2), "2x3": (2, 3),
                                       "3x3": (3, 3)}
MAX_ROWS, MAX_COLUMNS = 3, 3


def layout_for(count: int) -> str:
    """The smallest layout with a viewport for each of ``count`` series (at most 3×3)."""
    return next((name for name, (rows, cols) in LAYOUTS.items() if rows * cols >= count), "3x3")


def patient_studies(current: StudySummary, studies: Iterable[StudySummary]) -> list[StudySummary]:
    """The current study's patient's studies, newest first (the timeline of priors).

    A study filed without a Patient ID stands alone: an unknown patient has no known priors.
    """
    if current.patient_id == "":
        return [current]
    return sorted((s for s in studies if s.patient_key == current.patient_key),
                  key=lambda s: (s.study_date, s.study_uid), reverse=True)


def priors(current: StudySummary, studies: Iterable[StudySummary]) -> list[StudySummary]:
    """The same patient's earlier studies, newest first, that may be hung beside the current one.

    A restricted patient's priors are never hung automatically: each needs its own break-glass.
    """
    if current.restricted:
        return []
    return [s for s in patient_studies(current, studies)
            if s.study_uid != current.study_uid and s.study_date < current.study_date]


def relevant_prior(current: StudySummary, studies: Iterable[StudySummary]) -> StudySummary | None:
    """The same patient's most recent earlier study, preferring one that shares a modality."""
    earlier = priors(current, studies)
    comparable = [s for s in earlier if set(s.modalities) & set(current.modalities)]
    candidates = comparable or earlier
    return candidates[0] if candidates else None
