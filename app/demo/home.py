"""A throw-away demo home: demo users with known passwords and generated, PHI-free studies.

The demo uses the passphrase key store (never the OS keyring, so nothing outlives the folder)
and shows each demo user's current authenticator code, which a real home never does.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from app.demo.anatomy import brain_mr, chest_ct
from app.demo.studies import Patient, ct_study, mr_study, to_bytes
from app.security import totp
from app.security.roles import Role
from app.vault import Vault


@dataclass(frozen=True)
class DemoUser:
    name: str
    role: Role
    password: str
    totp_secret: str


@dataclass
class DemoHome:
    home: Path
    passphrase: str
    users: list[DemoUser] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    featured: str = ""  # the current chest CT, which has a prior to compare with

    def current_codes(self) -> dict[str, str]:
        return {u.name: totp.current_code(u.totp_secret) for u in self.users}

    def as_dict(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            "passphrase": self.passphrase,
            "studies": self.studies,
            "users": [{"user": u.name, "role": u.role.value, "password": u.password,
                       "totp_secret": u.totp_secret} for u in self.users],
        }

    def describe(self) -> str:
        lines = [f"Demo home: {self.home}", f"Vault passphrase: {self.passphrase}", "",
                 "Demo users (the login window shows each one's current authenticator code):"]
        lines += [f"  {u.name:<9} {u.role.value:<16} password: {u.password}" for u in self.users]
        return "\n".join(lines)


# name, role, password (memorable, and passing the rules: no user name inside)
_DEMO_USERS = [
    ("admin", Role.ADMIN, "demo orange pass"),
    ("rad", Role.RADIOLOGIST, "demo violet pass"),
    ("tech", Role.TECHNOLOGIST, "demo silver pass"),
    ("film", Role.LIBRARIAN, "demo copper pass"),
    ("privacy", Role.PRIVACY_OFFICER, "demo indigo pass"),
]


def make_demo_home(home: Path | None = None) -> DemoHome:
    home = home or Path(tempfile.mkdtemp(prefix="custodian-demo-")) / "home"
    demo = DemoHome(home, secrets.token_urlsafe(12))
    admin_password = _DEMO_USERS[0][2]
    vault, enrolment = Vault.create(home, admin="admin", password=admin_password,
                                    passphrase=demo.passphrase, use_keyring=False)
    with vault:
        demo.users.append(DemoUser("admin", Role.ADMIN, admin_password, enrolment.totp_secret))
        _, admin = vault.accounts.login("admin", admin_password, totp.current_code(enrolment.totp_secret))
        for name, role, password in _DEMO_USERS[1:]:
            added = vault.admin.add_user(admin, name, role, password)
            demo.users.append(DemoUser(name, role, password, added.totp_secret))
        vault.accounts.logout(admin)
        # The technologist loads the studies, so the radiologist's first code is still unused.
        tech = next(u for u in demo.users if u.name == "tech")
        _, session = vault.accounts.login(tech.name, tech.password, totp.current_code(tech.totp_secret))
        chest = Patient("DEMO-0001", "Demo^Alex")
        brain = Patient("DEMO-0002", "Sample^Robin")
        current = ct_study(chest, slices=60, date="20260315", description="CT CHEST W/O",
                           phantom=chest_ct(60, nodule_mm=14))  # new since the prior
        datasets = (current + ct_study(chest, slices=60, date="20250302", description="CT CHEST PRIOR",
                                       phantom=chest_ct(60))
                    + mr_study(brain, slices=24, phantom=brain_mr(24), window=(450, 900)))
        vault.intake.import_bytes(session, [(f"demo-{i:04d}", to_bytes(ds)) for i, ds in enumerate(datasets)])
        demo.studies = sorted({ds.StudyInstanceUID for ds in datasets})
        demo.featured = current[0].StudyInstanceUID
        vault.accounts.logout(session)
    return demo
