"""A user and a session as records, and the rule for user names: what a client of the workstation
service reads back or checks, so they import nothing but the roles (no database, no hashing):
`custodian whoami` starts light."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import UsageError
from app.security.roles import Role

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    disabled: bool
    enrolled: bool = True
    directory: bool = False  # a directory user's row on this station (app.security.directory)


@dataclass(frozen=True)
class Session:
    token_hash: str
    user: User
    expires_at: float  # the absolute limit
    needs_enrolment: bool = False  # opened with a recovery code: set up the authenticator first
    offline: bool = False  # a directory user's, opened while the directory could not be reached


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UsageError("A user name is 1–64 letters, digits, dots, dashes or underscores, "
                         "starting with a letter or digit.")
