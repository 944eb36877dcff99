"""Authentication attacks (a few of each; the long runner tries a thousand guesses)."""

from __future__ import annotations

from pathlib import Path

from tests.stress.attacks import run_all


def test_no_attack_gets_a_session(tmp_path: Path) -> None:
    attacks = run_all(tmp_path, attempts=12)
    assert all(a.attempts > 0 for a in attacks), attacks
    assert [a.got_in for a in attacks] == [0] * len(attacks), attacks
    guessing = attacks[0]
    assert "the lock held" in guessing.figure and "1 distinct message" in guessing.figure, guessing
    assert "1 distinct message" in attacks[1].figure
