"""A reader's key images: the images (frames) marked while reading, each kept under the reader's
name, as measurements are. What leaves for the PACS is a Key Object Selection document built from
them (:mod:`app.vault.key_images`); these rows are the reader's own working list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlcipher3

from app.store.books import FRAME_COLUMNS, fetch

if TYPE_CHECKING:  # (NumPy and pydicom: loaded by the reading that needs them, not with the schema)
    from app.imaging.pixels import FrameInfo

# Schema step: one row per marked frame (frame 0 is the first); kept when the cache evicts the
# study, like measurements (the study comes back from the PACS), forgotten when it is shredded.
MIGRATION = """
CREATE TABLE IF NOT EXISTS key_images (
    user TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    frame INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (user, sop_uid, frame)
);
CREATE INDEX IF NOT EXISTS key_images_study ON key_images(user, study_uid);
"""
FORGET_STUDY = "DELETE FROM key_images WHERE study_uid = ?"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document Storage


@dataclass(frozen=True)
class KeyImage:
    """One marked image: its study, series and instance, and the frame (0 for a single frame);
    ``number``: the instance's Instance Number (None if it has none, or it left the cache)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    frame: int
    number: int | None = None


@dataclass(frozen=True)
class KeyObject:
    """A Key Object Selection document stored in a study."""

    sop_uid: str
    study_uid: str
    blob: str


class KeyImageBook:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def image(self, sop_uid: str, frame: int) -> KeyImage | None:
        """The cached image ``sop_uid`` (its ``frame``) as a key image; None if it is not cached."""
        found = fetch(self._conn, KeyImage,
                      "SELECT study_uid, series_uid, sop_uid, ? AS frame, number FROM instances "
                      "WHERE sop_uid = ? AND rows IS NOT NULL AND ? < coalesce(frames, 1)",
                      (frame, sop_uid, frame))
        return found[0] if found and frame >= 0 else None

    def mark(self, user: str, image: KeyImage) -> bool:
        """Whether the reader's mark is new (False: it was marked already)."""
        return bool(self._conn.execute(
            "INSERT OR IGNORE INTO key_images (user, study_uid, series_uid, sop_uid, frame, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (user, image.study_uid, image.series_uid, image.sop_uid, image.frame, time.time())).rowcount)

    def unmark(self, user: str, sop_uid: str, frame: int) -> KeyImage | None:
        """The mark taken away; None if the reader had not marked the image."""
        found = fetch(self._conn, KeyImage, "SELECT study_uid, series_uid, sop_uid, frame FROM key_images "
                      "WHERE user = ? AND sop_uid = ? AND frame = ?", (user, sop_uid, frame))
        if found:
            self._conn.execute("DELETE FROM key_images WHERE user = ? AND sop_uid = ? AND frame = ?",
                               (user, sop_uid, frame))
        return found[0] if found else None

    def of_study(self, user: str, study_uid: str) -> list[KeyImage]:
        """The reader's key images of a study, in series and image order."""
        return fetch(self._conn, KeyImage,
                     "SELECT k.study_uid, k.series_uid, k.sop_uid, k.frame, i.number FROM key_images k "
                     "LEFT JOIN series se ON se.uid = k.series_uid "
                     "LEFT JOIN instances i ON i.sop_uid = k.sop_uid WHERE k.user = ? AND k.study_uid = ? "
                     "ORDER BY se.number, k.series_uid, i.number, k.sop_uid, k.frame", (user, study_uid))

    def documents(self, series_uid: str) -> list[KeyObject]:
        """The Key Object Selection documents of a series (a "key images" series)."""
        return fetch(self._conn, KeyObject, "SELECT sop_uid, study_uid, blob FROM instances "
                     "WHERE series_uid = ? AND sop_class = ? ORDER BY number, sop_uid",
                     (series_uid, KOS_CLASS))

    def frames(self, study_uid: str, sop_uids: list[str]) -> list[FrameInfo]:
        """The images among ``sop_uids`` stored in the study ``study_uid`` (none of any other
        study: a document shows nothing under a study but that study's own images)."""
        from app.imaging.pixels import FrameInfo

        if not sop_uids:
            return []
        rows = self._conn.execute(
            f"SELECT {FRAME_COLUMNS} FROM instances i WHERE i.study_uid = ? AND i.rows IS NOT NULL "
            f"AND i.sop_uid IN ({','.join('?' * len(sop_uids))})", (study_uid, *sop_uids)).fetchall()
        return [FrameInfo.from_row(row) for row in rows]

