"""Series thumbnails: a display-ready image shrunk to fit a small square box.

Block averaging (each thumbnail pixel is the mean of the block it covers) keeps thin bright
structures visible and never aliases the way picking every n-th pixel does; it also works on
colour pixels unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

THUMBNAIL_SIZE = 64  # pixels of the longer side


def shrink(pixels: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """``pixels`` (rows, cols[, 3]) uint8 reduced by one whole factor so the longer side fits ``size``.

    The edge rows and columns that do not fill a whole block are dropped (less than one block's
    worth); an image that already fits comes back as it is.
    """
    import numpy as np  # (here: the reading service names THUMBNAIL_SIZE; listing studies needs no NumPy)

    if size < 1:
        raise ValueError("a thumbnail needs at least one pixel")
    rows, cols = pixels.shape[:2]
    factor = math.ceil(max(rows, cols) / size)
    if factor <= 1:
        return pixels
    # A side shorter than one block (a long thin strip) is averaged whole.
    down, across = min(factor, rows), min(factor, cols)
    out_rows, out_cols = rows // down, cols // across
    block = pixels[: out_rows * down, : out_cols * across].astype(np.float32)
    block = block.reshape(out_rows, down, out_cols, across, *pixels.shape[2:])
    return np.rint(block.mean(axis=(1, 3))).astype(np.uint8)
