from __future__ import annotations

from app.imaging.hanging import layout_for, patient_studies, relevant_prior
from app.store.records import StudySummary


def study(uid: str, pid: str, date: str, *mods: str) -> StudySummary:
    return StudySummary(uid, hash(pid), pid, "X^Y", date, list(mods), "", 1, 1)


def test_prefers_the_latest_earlier_study_sharing_a_modality() -> None:
    current = study("c", "P1", "20260315", "CT")
    others = [current, study("mr", "P1", "20260101", "MR"), study("ct-old", "P1", "20240101", "CT"),
              study("ct", "P1", "20250302", "CT"), study("later", "P1", "20260401", "CT"),
              study("other", "P2", "20260301", "CT")]
    assert relevant_prior(current, others).study_uid == "ct"


def test_falls_back_to_any_earlier_study_and_never_pairs_unknown_patients() -> None:
    current = study("c", "P1", "20260315", "CT")
    assert relevant_prior(current, [study("mr", "P1", "20260101", "MR")]).study_uid == "mr"
    assert relevant_prior(current, [study("x", "P2", "20250101", "CT")]) is None
    anonymous = study("a", "", "20260315", "CT")
    assert relevant_prior(anonymous, [study("b", "", "20250101", "CT")]) is None


def test_timeline_is_the_patients_studies_newest_first() -> None:
    current = study("c", "P1", "20260315", "CT")
    others = [study("old", "P1", "20200101", "CR"), current, study("other", "P2", "20260301", "CT"),
              study("later", "P1", "20260401", "MR")]
    assert [s.study_uid for s in patient_studies(current, others)] == ["later", "c", "old"]
    anonymous = study("a", "", "20260315", "CT")
    assert patient_studies(anonymous, [anonymous, study("b", "", "20250101", "CT")]) == [anonymous]


def test_the_smallest_layout_that_holds_every_series() -> None:
    assert [layout_for(n) for n in (0, 1, 2, 3, 4, 5, 6, 7, 9, 14)] == [
        "1x1", "1x1", "1x2", "2x2", "2x2", "2x3", "2x3", "3x3", "3x3", "3x3"]
