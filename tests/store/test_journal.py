"""The receiver's journal: what it gives back after a crash is exactly what was appended whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.store.journal import JOURNAL, Journal, Received, read


def _record(n: int) -> Received:
    return Received(f"blob{n}", "dicom:MODALITY", f"MODALITY#{n}", "study/1.2.3", "custodian/instance/1.2.3")


def test_appends_come_back_whole_and_a_torn_one_is_left_out(tmp_path: Path) -> None:
    key = os.urandom(32)
    journal = Journal(tmp_path, key)
    journal.append([_record(1), _record(2)], [b"first" * 100, b"second"])
    journal.append([_record(3)], [b"third" * 1000])
    journal.close()
    assert [(r.blob_id, blob[:6]) for r, blob in read(tmp_path, key)] == [
        ("blob1", b"firstf"), ("blob2", b"second"), ("blob3", b"thirdt")]
    whole = (tmp_path / JOURNAL).read_bytes()
    (tmp_path / JOURNAL).write_bytes(whole[:-10])  # a crash in the middle of the last append
    assert [r.blob_id for r, _ in read(tmp_path, key)] == ["blob1", "blob2"]


@pytest.mark.parametrize("damage", ["other key", "flipped header"])
def test_records_that_do_not_unseal_end_the_journal(tmp_path: Path, damage: str) -> None:
    key = os.urandom(32)
    journal = Journal(tmp_path, key)
    journal.append([_record(1)], [b"blob"])
    journal.close()
    if damage == "flipped header":
        data = bytearray((tmp_path / JOURNAL).read_bytes())
        data[20] ^= 1
        (tmp_path / JOURNAL).write_bytes(bytes(data))
    assert list(read(tmp_path, os.urandom(32) if damage == "other key" else key)) == []


def test_a_cleared_journal_is_empty_and_takes_new_appends(tmp_path: Path) -> None:
    key = os.urandom(32)
    journal = Journal(tmp_path, key)
    journal.append([_record(1)], [b"blob"])
    journal.clear()
    assert journal.size == 0 and list(read(tmp_path, key)) == []
    journal.append([_record(2)], [b"next"])
    journal.close()
    assert [r.blob_id for r, _ in read(tmp_path, key)] == ["blob2"]
