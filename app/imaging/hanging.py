"""Hanging: which prior study a radiologist wants beside the current one."""

from __future__ import annotations

from collections.abc import Iterable

from app.store.records import StudySummary


def relevant_prior(current: StudySummary, studies: Iterable[StudySummary]) -> StudySummary | None:
    """The same patient's most recent earlier study, preferring one that shares a modality.

    Studies filed without a Patient ID are never paired: an unknown patient has no known priors.
    """
    if current.patient_id == "" or current.restricted:
        return None
    priors = [s for s in studies if s.patient_key == current.patient_key
              and s.study_uid != current.study_uid and s.study_date < current.study_date]
    comparable = [s for s in priors if set(s.modalities) & set(current.modalities)]
    return max(comparable or priors, key=lambda s: s.study_date, default=None)
