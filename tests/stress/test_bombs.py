"""The bombs and special files of issue 22 handed to real ``custodian`` processes: each refused in
bounded time and memory, leaving nothing behind (the long runner prints the same rows)."""

from __future__ import annotations

from pathlib import Path

from tests.stress.bombs import run_all

PEAK_MB = 400  # over a plain import of one file (the bombs took 2.2 to 2.9 GB)


def test_every_bomb_and_special_file_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    rows = run_all(tmp_path)
    assert len(rows) == 5
    assert [r.left for r in rows] == [0] * len(rows), rows
    assert [r.cases for r in rows] == [8, 1, 1, 1, 5], rows
    assert all(r.peak_mb < PEAK_MB and r.seconds < 30 for r in rows), rows
