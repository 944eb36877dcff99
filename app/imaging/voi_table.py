"""A VOI LUT chosen for a viewport (a presentation state's Softcopy VOI LUT), carried where a window goes.

A viewer keeps one window and hands it to the core with each frame; a table that rides in the same
place reaches :meth:`app.imaging.presentation.Presentation.grey` with nothing else to change, and a
reader's drag, which makes a plain window from a centre and width, leaves the table for a linear
window as a drag from any window does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.imaging.display import Window


@dataclass(frozen=True)
class TableWindow(Window):
    """Grey levels from a table; the centre and width are its input range (what the corner text shows
    and a drag starts from)."""

    first: int = 0  # the first input value mapped
    bits: int = 16  # bits of the output entries (LUT Descriptor's third value)
    entries: tuple[int, ...] = (0,)

    @classmethod
    def of(cls, first: int, bits: int, table: Sequence[int] | np.ndarray) -> TableWindow:
        count = len(table)
        return cls(first + count / 2, max(float(count), 1.0), int(first), int(bits) or 16,
                   tuple(int(v) for v in table) or (0,))

    def levels(self, values: np.ndarray) -> np.ndarray:
        """8-bit grey levels (float) of modality values as pydicom's apply_voi_lut maps them: whole
        values through the table, below its first input the first entry, above its last the last,
        scaled from the descriptor's bits to 0-255."""
        table = np.asarray(self.entries, np.float32) * np.float32(255.0 / ((1 << self.bits) - 1))
        index = np.clip(np.rint(values).astype(np.int64) - self.first, 0, len(table) - 1)
        return table[index]
