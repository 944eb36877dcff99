"""Password hashing (Argon2id) and the password rules of NIST SP 800-63B 5.1.1.2.

Length and a blocklist, no composition rules: at least 12 characters, not a commonly used or
breached password (also with digits or symbols tacked on), not one character repeated or a plain
sequence, and not built from the user name or the product's name.
"""

from __future__ import annotations

import functools
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import UsageError
from app.paths import resource_path

MIN_LENGTH = 12
MAX_LENGTH = 256
_CONTEXT_WORDS = ("custodian",)
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")

_hasher = PasswordHasher()  # Argon2id with argon2-cffi's RFC 9106 low-memory profile


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so both cases cost the same time."""
    return _hasher.hash("custodian-dummy-password")


@functools.cache
def blocklist() -> frozenset[str]:
    text = resource_path("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip())


def _is_sequence(text: str) -> bool:
    if len(set(text)) == 1:
        return True
    for seq in _SEQUENCES:
        doubled = seq + seq
        if text in doubled or text in doubled[::-1]:
            return True
    return False


def check_rules(password: str, user: str | None = None) -> None:
    """Raise :class:`UsageError` with the reason when ``password`` may not be used."""
    if len(password) < MIN_LENGTH:
        raise UsageError(f"The password is too short: use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise UsageError(f"The password is too long: use at most {MAX_LENGTH} characters.")
    folded = password.casefold()
    core = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", folded)  # without digits/symbols tacked on
    if folded in blocklist() or core in blocklist():
        raise UsageError("This password is on the list of common or breached passwords; choose another.")
    if _is_sequence(folded):
        raise UsageError("The password is a repeated character or a plain sequence; choose another.")
    words = [*_CONTEXT_WORDS, *([user.casefold()] if user and len(user) >= 3 else [])]
    if any(word in folded for word in words):
        raise UsageError("The password contains the user name or the product name; choose another.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
