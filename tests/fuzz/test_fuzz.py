"""The CI subset of the fuzzing (the long runner is ``python -m tests.fuzz.run``): mutated DICOM
files, site policies, outside media (zip, CD image, DICOMDIR), the central audit repository's file
and backups are accepted or refused with a reason, never crash anything, and nothing is
half-written."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.demo.studies import Patient
from tests.conftest import VaultEnv, study_bytes
from tests.fuzz.targets import (
    TARGETS,
    dicom_seeds,
    import_batch,
    media_vault_damage,
    mutate,
    restore_mutated,
)

CI = settings(max_examples=300, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutated_input_is_accepted_or_refused_never_a_crash(name: str) -> None:
    target, seeds = TARGETS[name]
    corpus = seeds()

    @CI
    @given(seed=st.integers(0, 2**32), pick=st.integers(0, len(corpus) - 1), edits=st.integers(1, 4))
    def case(seed: int, pick: int, edits: int) -> None:
        outcome = target(mutate(corpus[pick], random.Random(seed), edits))
        assert outcome.accepted or outcome.reason  # a refusal always says why

    case()
    if name.startswith("outside media"):  # their imports land in one vault: it lost nothing
        assert media_vault_damage() == 0


def test_a_batch_with_damaged_files_loses_nothing(env: VaultEnv) -> None:
    rng = random.Random(7)
    intact = [data for _, data in study_bytes(Patient("FUZZ-2", "Batch^Bea"), slices=20, size=16)]
    damaged = [mutate(rng.choice(dicom_seeds()), rng, rng.randrange(1, 4)) for _ in range(100)]
    files = intact + damaged
    rng.shuffle(files)
    result = import_batch(env.vault, env.login("tech"), files)
    assert result.imported + result.refused + result.duplicates == result.files
    assert result.imported >= len(intact) and result.damaged_after == 0


def test_a_changed_backup_is_refused_and_leaves_no_vault(env: VaultEnv, tmp_path: Path) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    backup = env.vault.admin.backup(env.login("admin"), tmp_path / "fuzz.backup",
                                    "fuzzing backup passphrase").path
    original = backup.read_bytes()
    rng = random.Random(11)
    for case in range(8):
        outcome = restore_mutated(backup, mutate(original, rng, rng.randrange(1, 3)),
                                  "fuzzing backup passphrase", tmp_path / f"home-{case}")
        assert not outcome.accepted and outcome.reason
