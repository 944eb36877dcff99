"""Thumbnails keep what the image shows: halves stay halves, a thin line stays visible."""

from __future__ import annotations

import numpy as np
import pytest

from app.imaging.thumbnail import shrink


def test_block_average_keeps_the_picture_and_a_thin_line() -> None:
    image = np.zeros((512, 512), np.uint8)
    image[:, :256] = 200
    image[:, 300] = 255  # one pixel wide: picking every 8th column would lose it
    small = shrink(image, 64)
    assert small.shape == (64, 64) and small.dtype == np.uint8
    assert (small[:, :32] == 200).all()
    assert (small[:, 37] == 32).all()  # 255 averaged over its 8-pixel block
    assert (np.delete(small[:, 32:], 5, axis=1) == 0).all()


def test_aspect_ratio_colour_and_small_images() -> None:
    colour = np.zeros((300, 500, 3), np.uint8)
    colour[..., 0] = 250
    small = shrink(colour, 64)
    assert small.shape == (37, 62, 3)  # one factor (8) for both sides
    assert (small[..., 0] == 250).all() and not small[..., 1:].any()
    tiny = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert shrink(tiny, 64) is tiny
    strip = np.full((2, 1000), 90, np.uint8)
    assert shrink(strip, 64).shape == (1, 62)
    with pytest.raises(ValueError):
        shrink(tiny, 0)
