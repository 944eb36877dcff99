"""TOTP second factor (RFC 6238 via pyotp): ±1 step of clock drift, and no code used twice."""

from __future__ import annotations

import time

import pyotp

ISSUER = "Custodian"
STEP = 30


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, user: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=ISSUER)


def current_code(secret: str, at: float | None = None) -> str:
    return pyotp.TOTP(secret).at(at if at is not None else time.time())


def matching_step(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to, if it is valid now and newer than ``last_step``."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    now = time.time() if now is None else now
    totp = pyotp.TOTP(secret)
    step = int(now // STEP)
    for candidate in (step - 1, step, step + 1):
        if candidate > last_step and pyotp.utils.strings_equal(totp.at(candidate * STEP), code):
            return candidate
    return None
