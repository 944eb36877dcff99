"""A timeline of named moments, so the reading room's speed is measured from its own events.

With ``CUSTODIAN_TRACE=FILE`` set, :func:`mark` appends one JSON line per moment to FILE:
``{"t": <time.monotonic() seconds>, "event": "<name>", ...numbers}``. Monotonic time is one clock
for every process of the machine, so a benchmark compares moments of the application with its
own. Only event names and numbers are written, never anything shown on screen (no PHI). Without
the variable a mark costs one environment lookup.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VARIABLE = "CUSTODIAN_TRACE"
_writing = threading.Lock()  # marks come from the GUI thread and from workers


@dataclass(frozen=True)
class Moment:
    t: float  # time.monotonic() seconds
    event: str
    numbers: dict[str, float] = field(default_factory=dict)


def enabled() -> bool:
    """Whether moments are being recorded (so a caller can skip preparing one)."""
    return bool(os.environ.get(VARIABLE))


def mark(event: str, **numbers: float) -> None:
    """Record that ``event`` happened now (``numbers``: counts or sizes that go with it)."""
    path = os.environ.get(VARIABLE)
    if not path:
        return
    line = json.dumps({"t": time.monotonic(), "event": event, **numbers})
    with _writing, open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def read(path: Path) -> list[Moment]:
    """The moments a trace file holds, in the order they were marked."""
    moments = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        t, event = float(record.pop("t")), str(record.pop("event"))
        moments.append(Moment(t, event, {k: float(v) for k, v in record.items()}))
    return moments


def first(moments: list[Moment], event: str, after: float = float("-inf")) -> Moment | None:
    """The first ``event`` marked after time ``after``, if any."""
    return next((m for m in moments if m.event == event and m.t > after), None)
