"""A study's manifest: one value over all its instances (SOP Instance UID and plaintext SHA-256),
kept in the index beside them, so ``verify`` finds an instance row lost or added behind the
vault's back (an old index page put back, say) even where each remaining row is intact.

It is a set hash (LtHash16, Lewi et al. 2019): each instance maps to 1024 16-bit numbers drawn
from SHAKE-256, and the manifest is their lane-wise sum modulo 2**16. Adding instances changes it
by their own vectors only, so storing the 3000th image of a study costs what the first did; a
hash over the sorted list had to re-read and re-hash every instance of the study each time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlcipher3

from app.errors import IntegrityError

if TYPE_CHECKING:
    import numpy as np

LANES = 1024
SIZE = 2 * LANES  # bytes
EMPTY = bytes(SIZE)
SQL_FUNCTION = "study_manifest"  # aggregate over (sop_uid, sha256): the manifest of those rows
# The manifest a row of ``studies`` should hold, computed from its instance rows.
OF_STUDY_ROWS = (f"(SELECT {SQL_FUNCTION}(sop_uid, sha256) FROM instances "
                 "WHERE study_uid = studies.uid)")


def _vector(sop_uid: str, digest: str) -> np.ndarray:
    import numpy as np  # (loaded when a manifest is summed, not by every command that opens the index)

    drawn = hashlib.shake_256(f"{sop_uid}:{digest}".encode()).digest(SIZE)
    return np.frombuffer(drawn, dtype="<u2")


class _Lanes:
    """A manifest being summed; also ``study_manifest(sop_uid, sha256)`` in SQL, where SQLite
    makes one per group of rows and steps it through them."""

    def __init__(self, manifest: bytes | None = None) -> None:
        if manifest is not None and len(manifest) != SIZE:  # only a damaged index holds such a value
            raise IntegrityError("A study's manifest in the index is damaged, so nothing more can be "
                                 "added to the study; 'custodian verify' names it.")
        import numpy as np

        self._lanes = np.frombuffer(manifest or EMPTY, dtype="<u2").copy()

    def step(self, sop_uid: str, digest: str) -> None:
        self._lanes += _vector(sop_uid, digest)  # uint16 arithmetic wraps: the sum is modulo 2**16

    def finalize(self) -> bytes:
        return self._lanes.tobytes()


def extended(manifest: bytes | None, pairs: Iterable[tuple[str, str]]) -> bytes:
    """``manifest`` (None: no instances yet) with the (SOP Instance UID, SHA-256) pairs added."""
    lanes = _Lanes(manifest)
    for sop_uid, digest in pairs:
        lanes.step(sop_uid, digest)
    return lanes.finalize()


def register(conn: sqlcipher3.Connection) -> None:
    conn.create_aggregate(SQL_FUNCTION, 2, _Lanes)
