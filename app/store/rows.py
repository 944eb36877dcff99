"""What an import run keeps of each file on its way in, the index rows it writes for an instance,
and what names a blob's key in the journal."""

from __future__ import annotations

import secrets
from concurrent.futures import Future
from dataclasses import dataclass, field

import sqlcipher3

from app.store.blobs import instance_aad, quarantine_aad
from app.store.core import QUARANTINE_CONTEXT, study_context
from app.store.ingest import ParsedInstance


@dataclass
class Pending:
    """One instance or quarantined file whose sealed blob an I/O thread is staging."""

    blob_id: str
    future: Future[str]  # -> the SHA-256 of the plaintext
    parsed: ParsedInstance | None = None
    source: str = ""
    reason: str = ""
    size: int = 0


@dataclass
class Batch:
    folder: str = field(default_factory=lambda: secrets.token_hex(1))
    items: list[Pending] = field(default_factory=list)
    nbytes: int = 0


def sealed_under(blob_id: str, parsed: ParsedInstance | None) -> tuple[str, str]:
    """The data key context and associated data a staged blob is sealed with (as the journal
    names them): an instance's, or (no ``parsed``) a quarantined file's."""
    if parsed is None:
        return QUARANTINE_CONTEXT, quarantine_aad(blob_id).decode("latin-1")
    return study_context(parsed.study_uid), instance_aad(parsed.sop_uid).decode("latin-1")


def series_study(conn: sqlcipher3.Connection, seen: dict[str, str], p: ParsedInstance) -> str:
    """The study a series belongs to: the index's, else the first instance of the batch naming it."""
    if p.series_uid not in seen:
        row = conn.execute("SELECT study_uid FROM series WHERE uid = ?", (p.series_uid,)).fetchone()
        seen[p.series_uid] = row[0] if row else p.study_uid
    return seen[p.series_uid]


INSERT_INSTANCE = (
    "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class, number, blob, size, sha256, "
    "transfer_syntax, rows, columns, frames, samples, bits_allocated, bits_stored, "
    "pixel_representation, photometric, rescale_slope, rescale_intercept, window_center, "
    "window_width, pixel_spacing, position, orientation, pixel_offset, needs_header, frame_positions, "
    "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def instance_row(p: ParsedInstance, blob_id: str, size: int, digest: str,
                  now: float) -> tuple[object, ...]:
    return (p.sop_uid, p.series_uid, p.study_uid, p.sop_class, p.instance_number, blob_id,
            size, digest, p.transfer_syntax, p.rows, p.columns, p.frames, p.samples,
            p.bits_allocated, p.bits_stored, p.pixel_representation, p.photometric,
            p.rescale_slope, p.rescale_intercept, p.window_center, p.window_width,
            p.pixel_spacing, p.position, p.orientation, p.pixel_offset, p.needs_header,
            p.frame_positions, now)

