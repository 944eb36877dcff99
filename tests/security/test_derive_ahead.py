"""The vault passphrase's key derivation begun ahead of opening (issue 24: Argon2 runs while the
command imports what it needs): the same key-encryption key, the same refusal of a wrong
passphrase, and nothing asked or begun for a key store that is not under a passphrase."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import VaultLocked
from app.security import keys
from app.security.keys import KeyStore, derive_ahead


def _store(home: Path, passphrase: str) -> bytes:
    home.mkdir()
    store, made = KeyStore.create(home, passphrase=passphrase, use_keyring=False)
    store.save()
    return made.index_key


def test_the_key_derived_ahead_opens_the_vault_as_the_passphrase_does(tmp_path: Path) -> None:
    index_key = _store(tmp_path / "home", "a passphrase")
    asked: list[str] = []
    source = derive_ahead(tmp_path / "home", lambda: asked.append("asked") or "a passphrase")
    assert asked == ["asked"] and len(keys._AHEAD) == 1  # asked once, and under way
    assert KeyStore.load(tmp_path / "home").unlock(source).index_key == index_key
    assert keys._AHEAD == {}  # taken, not kept


def test_a_wrong_passphrase_derived_ahead_is_refused(tmp_path: Path) -> None:
    _store(tmp_path / "home", "a passphrase")
    source = derive_ahead(tmp_path / "home", lambda: "another one")
    with pytest.raises(VaultLocked, match="passphrase is wrong"):
        KeyStore.load(tmp_path / "home").unlock(source)


def test_nothing_is_asked_without_a_key_store_under_a_passphrase(tmp_path: Path) -> None:
    def source() -> str:
        raise AssertionError("asked")

    assert derive_ahead(tmp_path / "nowhere", source) is source
