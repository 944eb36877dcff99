"""Password hashing (Argon2id) and the password rules (NIST SP 800-63B: length, not composition)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import UsageError

MIN_LENGTH = 12
MAX_LENGTH = 256

_hasher = PasswordHasher()  # Argon2id with argon2-cffi's RFC 9106 low-memory profile


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so both cases cost the same time."""
    return _hasher.hash("custodian-dummy-password")


def check_rules(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise UsageError(f"The password is too short: use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise UsageError(f"The password is too long: use at most {MAX_LENGTH} characters.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
