"""NumPy arrays across the service's socket (pixels, overlays), apart from the codec so that a
client which reads no images does not load NumPy."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def encode_array(value: object) -> dict[str, Any]:
    array = np.ascontiguousarray(value)
    return {"dtype": array.dtype.str, "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(doc: dict[str, Any], raw: bytes) -> np.ndarray:
    """``doc`` as :func:`encode_array` wrote it, with its ``data`` already read as ``raw``."""
    return np.frombuffer(raw, dtype=np.dtype(str(doc["dtype"]))).reshape(
        [int(n) for n in doc["shape"]]).copy()
