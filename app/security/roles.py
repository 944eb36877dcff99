"""The one table that decides who may do what.

Every CLI command and GUI action names an :class:`Action`; :func:`permits` is the only place
that answers. The identity issue extends the matrix (break-glass, minimum-necessary fields).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    LIBRARIAN = "librarian"
    PRIVACY_OFFICER = "privacy-officer"
    ADMIN = "admin"


class Action(StrEnum):
    LIST_STUDIES = "list studies"
    VIEW_IMAGES = "view images"
    IMPORT = "import"
    VERIFY = "verify the vault"
    SHRED = "shred a study"
    ROTATE_KEYS = "rotate keys"
    MANAGE_USERS = "manage users"
    AUDIT_VERIFY = "verify the audit trail"
    AUDIT_READ = "read the audit trail"


_CLINICAL = {Action.LIST_STUDIES, Action.VIEW_IMAGES}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.RADIOLOGIST: frozenset(_CLINICAL | {Action.IMPORT}),
    Role.TECHNOLOGIST: frozenset(_CLINICAL | {Action.IMPORT, Action.VERIFY}),
    Role.LIBRARIAN: frozenset({Action.LIST_STUDIES, Action.IMPORT}),
    Role.PRIVACY_OFFICER: frozenset(
        {Action.AUDIT_VERIFY, Action.AUDIT_READ, Action.SHRED, Action.VERIFY}
    ),
    Role.ADMIN: frozenset(
        {Action.MANAGE_USERS, Action.ROTATE_KEYS, Action.VERIFY, Action.AUDIT_VERIFY, Action.SHRED}
    ),
}


def permits(role: Role, action: Action) -> bool:
    return action in PERMISSIONS.get(role, frozenset())


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValueError(f"Unknown role '{text}'; choose one of: {names}.") from None
