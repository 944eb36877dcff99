"""No patient data or key material in plaintext anywhere after a working day."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import VaultEnv
from tests.stress.hygiene import working_day


def test_nothing_of_a_patient_or_a_key_is_left_in_plaintext(env: VaultEnv, tmp_path: Path) -> None:
    found = working_day(env, tmp_path)
    assert found.files > 10 and found.needles > 10
    assert found.leaks == []
