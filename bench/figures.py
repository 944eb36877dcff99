"""One benchmark figure: what was measured, beside which peer, against which target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Figure:
    figure: str
    value: float
    unit: str
    peer: str
    peer_value: float
    ratio: float
    target: str
    met: bool | None  # None: an informational figure without a target
