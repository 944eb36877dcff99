"""What one read from outside may take: the site policy's intake limits, applied by every path that
brings bytes in (a folder walk, a zip or CD image, a deflated data set, an association).

Hostile media is refused by what it declares before it is read where it can be (sizes in a
folder, a zip's central directory, a CD image's extents), and while it is read where it cannot
(inflation is counted as it goes and stops at the limit), so refusing a bomb costs neither the
memory nor the time of opening it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from app.errors import CustodianError
from app.security.policy import SitePolicy

MB = 1024 * 1024
# Below this, a high ratio is ordinary (a small, mostly empty object compresses very well) and
# cannot hurt: the expansion limit applies to what would inflate beyond it.
EXPANSION_FLOOR = 16 * MB


class Unreadable(Exception):
    """A source that cannot be read at all (there is nothing to quarantine)."""


class OverLimit(Unreadable):
    """Refused by one of the site's intake limits: nothing of it is kept, the audit trail says why."""


@dataclass(frozen=True)
class IntakeLimits:
    file_bytes: int  # one file or member, as stored (after inflation)
    total_bytes: int  # one import or association
    files: int  # files or members one import or association may hold
    expansion: int  # times its compressed size a member or data set may inflate to
    quarantine_bytes: int  # all that the quarantine may keep

    @classmethod
    def of(cls, policy: SitePolicy) -> IntakeLimits:
        return cls(policy.intake_file_max_mb * MB, policy.intake_max_mb * MB, policy.intake_max_files,
                   policy.intake_expansion_max, policy.quarantine_max_mb * MB)

    def file_refusal(self, size: int) -> OverLimit | None:
        if size <= self.file_bytes:
            return None
        return OverLimit(f"it is larger than the {self.file_bytes // MB} MB one file may take "
                         "(site policy intake_file_max_mb)")

    def inflation_cap(self, packed: int) -> int:
        """The most that ``packed`` compressed bytes may inflate to."""
        return min(self.file_bytes, max(self.expansion * packed, EXPANSION_FLOOR))

    def too_inflated(self, inflated: int) -> OverLimit:
        """Why something that inflated to ``inflated`` bytes, past its cap, is refused."""
        return self.file_refusal(inflated) or OverLimit(
            f"it would inflate to more than {self.expansion} times its compressed size "
            "(site policy intake_expansion_max): refused as a decompression bomb")

    def check_whole(self, what: str, files: int, size: int) -> None:
        """Refuse a whole import before anything of it is read (a plain sentence, nothing kept)."""
        if files > self.files:
            raise CustodianError(f"The {what} holds more than {self.files} files, more than one import may "
                                 "take (site policy intake_max_files); nothing was imported.")
        if size > self.total_bytes:
            raise CustodianError(f"The {what} holds {size // MB} MB, more than the {self.total_bytes // MB} "
                                 "MB one import may take (site policy intake_max_mb); nothing was imported.")


DEFAULT_LIMITS = IntakeLimits.of(SitePolicy())


@dataclass
class Budget:
    """What one import or association has taken so far; each file asks before it is kept."""

    limits: IntakeLimits
    files: int = 0
    nbytes: int = 0

    def take(self, size: int) -> None:
        if (refused := self.limits.file_refusal(size)) is not None:
            raise refused
        if self.files + 1 > self.limits.files:
            raise OverLimit(f"one import or association may hold at most {self.limits.files} files "
                            "(site policy intake_max_files)")
        if self.nbytes + size > self.limits.total_bytes:
            raise OverLimit(f"one import or association may take at most {self.limits.total_bytes // MB} "
                            "MB (site policy intake_max_mb)")
        self.files += 1
        self.nbytes += size


@dataclass
class Budgets:
    """A budget for each of many open things (the storage SCP's associations), each dropped
    with the thing it counts."""

    limits: IntakeLimits
    _open: weakref.WeakKeyDictionary[object, Budget] = field(default_factory=weakref.WeakKeyDictionary)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, owner: object, size: int) -> None:
        with self._lock:  # (each association's handler runs on its own thread)
            budget = self._open.get(owner)
            if budget is None:
                budget = self._open[owner] = Budget(self.limits)
            budget.take(size)
