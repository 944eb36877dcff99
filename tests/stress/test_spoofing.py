"""Spoofed senders against the storage SCP (a few tries each; the long runner makes twenty)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.stress.spoofing import run_all

pytestmark = pytest.mark.skipif(shutil.which("storescp") is None,
                                reason="DCMTK is not installed (installer/setup.sh does)")


def test_no_spoofed_sender_gets_in(tmp_path: Path) -> None:
    attacks = run_all(tmp_path, attempts=3)
    assert len(attacks) == 6 and all(a.attempts == 3 for a in attacks), attacks
    assert [a.got_in for a in attacks] == [0] * len(attacks), attacks
    assert not [a.figure for a in attacks if a.figure.startswith("FAILED")]
