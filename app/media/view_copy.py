"""Copying or saving a displayed image: a disclosure like any export, never a quiet screenshot.

What leaves is the stored frame rendered at the reader's window, as a PNG: never the viewer's
corner text. De-identified (the default) it has no overlay planes either, and an image whose pixels
may carry patient details (the export's burnt-in test) is refused, since pixels cannot be cleaned;
the reader may choose to copy it identified, which the disclosure record says.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.imaging.display import Window
from app.media.deid import DeidOptions
from app.media.disclosures import Delivery, ExportRequest, IdentityCheck, MediaKind, Purpose, RecipientKind

CLIPBOARD = "clipboard"
IMAGE_FILE = "image file"


@dataclass(frozen=True)
class ViewCopy:
    """One displayed frame to copy (``out`` None: for the clipboard) or save (a new .png file)."""

    series_uid: str
    sop_uid: str
    frame: int
    window: Window | None  # the reader's; None: the image's own
    invert: bool
    recipient_kind: RecipientKind
    recipient: str
    purpose: Purpose
    identity_check: IdentityCheck
    authorization: str = ""
    identified: bool = False
    out: Path | None = None

    @property
    def media(self) -> str:
        return IMAGE_FILE if self.out is not None else CLIPBOARD

    def disclosure(self, study_uid: str) -> ExportRequest:
        """The request as the accounting of disclosures records it (checks recipient and reference).
        The image is handed over directly, so the passphrase delivery is "handed-over"."""
        return ExportRequest((study_uid,), self.recipient_kind, self.recipient, self.purpose,
                             self.identity_check, Delivery.HANDED_OVER, MediaKind.ZIP,
                             self.out or Path(CLIPBOARD), self.authorization,
                             deidentify=None if self.identified else DeidOptions())


def png(pixels: np.ndarray) -> bytes:
    """8-bit grey (rows, cols) or RGB (rows, cols, 3) pixels as a PNG file."""
    rows, cols = pixels.shape[:2]
    colour = pixels.ndim == 3
    raw = np.ascontiguousarray(pixels, np.uint8).reshape(rows, -1)
    scanlines = np.hstack([np.zeros((rows, 1), np.uint8), raw]).tobytes()  # filter 0 on every line

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", cols, rows, 8, 2 if colour else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 6))
            + chunk(b"IEND", b""))
