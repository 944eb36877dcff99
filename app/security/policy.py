"""The site's security policy: timeouts, lockout and break-glass limits.

Kept in the vault (the packaging issue adds the signed, managed policy file on top). A user's own
setting can only make a limit stricter, never looser.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, fields

import sqlcipher3

from app.errors import UsageError
from app.media.disclosures import Purpose
from app.net.nodes import check_ae_title

_KEY = "site_policy"


@dataclass(frozen=True)
class SitePolicy:
    inactivity_seconds: int = 10 * 60
    absolute_seconds: int = 12 * 60 * 60
    lockout_failures: int = 5
    lockout_seconds: int = 15 * 60
    break_glass_seconds: int = 60 * 60
    anomaly_patients_per_hour: int = 30  # distinct patients one user opens before an alert
    anomaly_exports_per_day: int = 10  # distinct patients one user exports in a day before an alert
    # Local hours; image access outside them raises an alert. Radiology reads around the clock,
    # so the default covers the whole day and a site narrows it where nights are unusual.
    office_hours_start: int = 0
    office_hours_end: int = 24
    # This workstation on the DICOM network: its AE title and the storage SCP's port.
    ae_title: str = "CUSTODIAN"
    scp_port: int = 11112
    # The address the storage SCP listens on: loopback until an administrator sets the station's.
    scp_address: str = "127.0.0.1"
    require_tls: bool = False  # plain DICOM refused both ways, and plain nodes at node add
    pacs_node: str = ""  # the node queried, sent to and watched by default; empty: the first node
    prefetch_priors: int = 2  # earlier studies of the patient fetched when a study is opened
    cache_budget_mb: int = 0  # 0: no limit; else studies the PACS holds are evicted, oldest use first
    export_max_mb: int = 0  # 0: no limit; else the most one export may hold
    deidentify_purposes: str = "research,teaching"  # export purposes that must be de-identified
    # What one read from outside (media, a folder, an archive, an association) may take.
    intake_file_max_mb: int = 4096  # one file or archive member, as stored (after inflation)
    intake_max_mb: int = 65536  # one import or association in all
    intake_max_files: int = 200_000  # files or members one import may hold
    intake_expansion_max: int = 200  # how many times its compressed size a member may inflate to
    quarantine_max_mb: int = 1024  # all that unreadable files kept for inspection may take
    # Directory accounts: how long a directory user's access goes on before the directory is asked
    # again (a leaver's sessions end at the next access after it), and how long after a login on this
    # station the user may log in offline while the directory cannot be reached (0: never).
    directory_recheck_seconds: int = 5 * 60
    offline_login_days: int = 7

    def __post_init__(self) -> None:
        limits = {
            "inactivity_seconds": (30, 10 * 60),  # the site may shorten the 10 minutes, not lengthen
            "absolute_seconds": (5 * 60, 12 * 60 * 60),
            "lockout_failures": (3, 20),
            "lockout_seconds": (60, 24 * 60 * 60),
            "break_glass_seconds": (5 * 60, 4 * 60 * 60),
            "anomaly_patients_per_hour": (1, 10_000),
            "anomaly_exports_per_day": (1, 10_000),
            "office_hours_start": (0, 23),
            "office_hours_end": (1, 24),
            "scp_port": (1, 65535),
            "prefetch_priors": (0, 10),
            "cache_budget_mb": (0, 100_000_000),
            "export_max_mb": (0, 100_000_000),
            "intake_file_max_mb": (1, 1_000_000),
            "intake_max_mb": (1, 100_000_000),
            "intake_max_files": (1, 100_000_000),
            "intake_expansion_max": (2, 100_000),
            "quarantine_max_mb": (0, 1_000_000),
            "directory_recheck_seconds": (1, 60 * 60),
            "offline_login_days": (0, 30),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"Site policy: {name.replace('_', ' ')} must be a whole number "
                                 f"from {low} to {high}, not {value!r}.")
        if not isinstance(self.require_tls, bool):
            raise UsageError(f"Site policy: require tls is on or off, not {self.require_tls!r}.")
        try:
            ipaddress.ip_address(self.scp_address)
        except ValueError:
            raise UsageError(f"Site policy: scp address must be an IP address of this station "
                             f"(0.0.0.0 for every interface), not {self.scp_address!r}.") from None
        if self.office_hours_start >= self.office_hours_end:
            raise UsageError("Site policy: office hours must start before they end.")
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        purposes = {p.strip() for p in self.deidentify_purposes.split(",") if p.strip()}
        known = {p.value for p in Purpose}
        if purposes - known:
            raise UsageError(f"Site policy: deidentify purposes must be among {', '.join(sorted(known))}.")
        object.__setattr__(self, "deidentify_purposes", ",".join(sorted(purposes)))

    @classmethod
    def load(cls, conn: sqlcipher3.Connection) -> SitePolicy:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_KEY,)).fetchone()
        return cls(**json.loads(row[0])) if row else cls()

    def save(self, conn: sqlcipher3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (_KEY, json.dumps(asdict(self), sort_keys=True)))

    def under(self, managed: dict[str, object]) -> SitePolicy:
        """This policy with the managed site policy's settings in force: they win over local ones."""
        unknown = set(managed) - {f.name for f in fields(self)}
        if unknown:
            raise UsageError("Site policy: the managed policy names settings this version does not know: "
                             f"{', '.join(sorted(unknown))}.")
        return SitePolicy(**{**asdict(self), **managed})

    def with_setting(self, name: str, value: str) -> SitePolicy:
        names = {f.name for f in fields(self)}
        if name not in names:
            raise UsageError(f"Unknown site policy setting '{name}'; settings: {', '.join(sorted(names))}.")
        if isinstance(getattr(self, name), str):
            return SitePolicy(**{**asdict(self), name: value})
        if isinstance(getattr(self, name), bool):
            switch = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}
            if value.lower() not in switch:
                raise UsageError(f"Site policy: {name} is on or off, not '{value}'.")
            return SitePolicy(**{**asdict(self), name: switch[value.lower()]})
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"Site policy: {name} takes a whole number, not '{value}'.") from None
        return SitePolicy(**{**asdict(self), name: number})
