"""The audit message schema printed in DICOM PS3.15 A.5.1.1, checked with jing.

jing is the reference validator here: libxml2's RELAX NG (lxml, xmllint) accepts messages jing
rejects (see ../shared/standards/README.md). installer/setup.sh installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import REPO

STANDARD = REPO.parent / "shared" / "standards" / "audit-message.rng"


def invalid(messages: Sequence[str]) -> dict[int, str]:
    """jing's first complaint about each message that is not valid, by position (empty: all are
    valid); one jing run for all of them. Skips the test where jing or the schema is missing."""
    jing = shutil.which("jing")
    if jing is None or not STANDARD.exists():
        pytest.skip("jing and the PS3.15 schema are needed (installer/setup.sh installs jing)")
    with tempfile.TemporaryDirectory(prefix="audit-messages-") as folder:
        paths = [Path(folder) / f"{n:05d}.xml" for n in range(len(messages))]
        for path, message in zip(paths, messages, strict=True):
            path.write_text(message, encoding="utf-8")
        result = subprocess.run([jing, str(STANDARD), *map(str, paths)], capture_output=True, text=True,
                                timeout=300)
    index = {str(path): n for n, path in enumerate(paths)}
    errors: dict[int, str] = {}
    for line in result.stdout.splitlines():  # "FILE:LINE:COLUMN: error: WHAT"
        where, _, what = line.partition(": ")
        n = index.get(where.rsplit(":", 2)[0])
        assert n is not None, f"jing could not check the messages: {line}"
        errors.setdefault(n, what)
    assert bool(errors) == (result.returncode != 0), f"jing failed: {result.stdout}{result.stderr}"
    return errors
