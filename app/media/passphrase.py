"""Passphrases for exported media: words a recipient can read over the phone and type.

Six words from the EFF long list (7776 words, as shipped with xkcdpass) give 77 bits of entropy,
drawn with :mod:`secrets`. The passphrase is shown once and never stored.
"""

from __future__ import annotations

import secrets
from functools import cache

from xkcdpass.xkcd_password import generate_wordlist, locate_wordfile

WORDS = 6


@cache
def _wordlist() -> tuple[str, ...]:
    return tuple(generate_wordlist(wordfile=locate_wordfile("eff-long"), min_length=3, max_length=9))


def new_passphrase(words: int = WORDS) -> str:
    wordlist = _wordlist()
    return "-".join(secrets.choice(wordlist) for _ in range(words))
