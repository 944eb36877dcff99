"""Envelope keys for the vault.

Hierarchy: a random 256-bit *master key* (MK) is held by the OS keyring, or, where no usable
keyring exists, wrapped with a key derived from a passphrase by Argon2id; a service vault's is
sealed instead (:mod:`app.security.sealing`: a PKCS#11 token, or a key file only the service
account reads), so that it opens without a person and no user holds it. The MK wraps the
SQLCipher *index key* (in ``keystore.json``) and every per-study *data key* (in the index).
Rotating the MK therefore re-wraps a handful of small keys and never re-encrypts images, and
destroying a study's data key makes its blobs unreadable (crypto-shredding).

Every wrapped key records the id (``kid``) of the MK that wrapped it, so a rotation interrupted
at any step leaves each key readable with a master the keystore still lists. A new index key is
staged (``pending_index``) before the index is re-encrypted under it, so an interrupted renewal
leaves the index readable with one of the two.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.atomicfile import write_durable
from app.errors import CustodianError, VaultLocked
from app.security.sealing import SEALED_MODES, Sealer, open_sealer

KEYSTORE_FILE = "keystore.json"
KEYRING_SERVICE = "Custodian vault"
FORMAT = 1
# Argon2id, RFC 9106 second recommended option scaled to a workstation: 64 MiB, 3 passes.
KDF_PARAMS = {"name": "argon2id", "time_cost": 3, "memory_cost": 65536, "parallelism": 2}

# Where each mode keeps the master key, as a sentence says it.
WHERE = {"keyring": "kept by the OS keyring", "passphrase": "wrapped with the vault passphrase",
         "keyfile": "sealed with a key file", "pkcs11": "sealed in a PKCS#11 token"}

PASSPHRASE_FALLBACK_NOTICE = (
    "No usable OS keyring on this machine: the vault's master key is wrapped with a passphrase "
    "(Argon2id) instead. Keep that passphrase safe; without it the vault cannot be opened."
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def wrap(kek: bytes, key: bytes, context: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, key, context)


def unwrap(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], context)


def derive(key: bytes, purpose: str) -> bytes:
    """A sub-key for one purpose, so no key is used for two jobs."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(key)


def new_kdf() -> dict[str, object]:
    """Argon2id parameters with a fresh salt, as stored beside what they protect."""
    return {**KDF_PARAMS, "salt": _b64(os.urandom(16))}


def derive_kek(passphrase: str, kdf: Mapping[str, Any]) -> bytes:
    """The 256-bit key-encryption key a passphrase gives under stored Argon2id parameters (as
    :func:`new_kdf` made them, read back from JSON); taken from :func:`derive_ahead` if it began it."""
    ahead = _AHEAD.pop(_ahead_key(passphrase, kdf), None)
    return ahead.result() if ahead is not None else _argon2(passphrase, kdf)


# Derivations begun before the vault's modules were loaded (derive_ahead): (passphrase, KDF) -> KEK.
_AHEAD: dict[tuple[str, str], Future[bytes]] = {}


def _ahead_key(passphrase: str, kdf: Mapping[str, Any]) -> tuple[str, str]:
    return passphrase, json.dumps(dict(kdf), sort_keys=True)


def derive_ahead(home: Path, source: PassphraseSource) -> PassphraseSource:
    """``source`` for opening the vault in ``home``; when its master key is under a passphrase, the
    passphrase is asked now and its Argon2 derivation started in a thread. Argon2 releases the GIL,
    so the command imports the vault's modules (or Qt) meanwhile instead of after it: a fifth of a
    second off every start (issue 24), the derivation itself unchanged."""
    try:
        store = KeyStore.load(home)
    except (CustodianError, OSError):
        return source  # (opening says what is wrong)
    if store.mode != "passphrase" or not store.kdf:
        return source
    passphrase = source()
    if passphrase:
        pool = ThreadPoolExecutor(1, thread_name_prefix="argon2")
        _AHEAD[_ahead_key(passphrase, store.kdf)] = pool.submit(_argon2, passphrase, store.kdf)
        pool.shutdown(wait=False)  # (its thread ends with the derivation)
    return lambda: passphrase


def _argon2(passphrase: str, kdf: Mapping[str, Any]) -> bytes:
    return hash_secret_raw(
        passphrase.encode("utf-8"), _unb64(str(kdf["salt"])),
        time_cost=int(kdf["time_cost"]), memory_cost=int(kdf["memory_cost"]),
        parallelism=int(kdf["parallelism"]), hash_len=32, type=Type.ID,
    )


def _keyring() -> ModuleType:
    """The keyring package, loaded only where a vault's key is (or may be) kept in it: it costs a
    command's start (issue 24) and a vault under a passphrase or a token never uses it."""
    import keyring

    return keyring


def keyring_usable() -> bool:
    """True when the OS keyring is a real secret store (not the fail or a plaintext backend)."""
    import keyring.backends.fail  # (see _keyring)

    backend = keyring.get_keyring()
    if isinstance(backend, keyring.backends.fail.Keyring):
        return False
    chained = getattr(backend, "backends", None)
    if chained is not None and not chained:
        return False
    # keyrings.alt's file backends keep secrets in plaintext or under a fixed key.
    if type(backend).__module__.startswith("keyrings.alt"):
        return False
    try:
        probe = secrets.token_hex(8)
        keyring.set_password(KEYRING_SERVICE, "probe-" + probe, probe)
        ok = keyring.get_password(KEYRING_SERVICE, "probe-" + probe) == probe
        keyring.delete_password(KEYRING_SERVICE, "probe-" + probe)
        return ok
    except Exception:
        return False


PassphraseSource = Callable[[], str | None]


@dataclass
class Keys:
    """The unlocked keys of one vault, held in memory only."""

    vault_id: str
    current_kid: str
    masters: dict[str, bytes]
    index_key: bytes

    def wrap_data_key(self, dek: bytes, context: str, kid: str | None = None) -> tuple[str, bytes]:
        kid = kid or self.current_kid
        return kid, wrap(self.masters[kid], dek, self._aad(kid, context))

    def unwrap_data_key(self, kid: str, wrapped: bytes, context: str) -> bytes:
        master = self.masters.get(kid)
        if master is None:
            raise CustodianError("A data key is wrapped with a master key this vault no longer has.")
        return unwrap(master, wrapped, self._aad(kid, context))

    def _aad(self, kid: str, context: str) -> bytes:
        return f"custodian/dek/{self.vault_id}/{kid}/{context}".encode()


@dataclass
class KeyStore:
    """``keystore.json``: metadata and wrapped keys only; never a plaintext key."""

    path: Path
    vault_id: str
    mode: str  # "keyring", "passphrase", "keyfile" or "pkcs11"
    kdf: dict[str, object] | None = None
    masters: dict[str, str] = field(default_factory=dict)  # kid -> wrapped or sealed MK (not keyring)
    index_keys: dict[str, str] = field(default_factory=dict)  # kid -> index key wrapped by MK
    current_kid: str = ""
    # SQLCipher settings the index was made with (empty: SQLCipher 4's defaults, older vaults)
    index_cipher: dict[str, object] = field(default_factory=dict)
    pending_index: str = ""  # a new index key (wrapped by the current MK) while the index is re-keyed
    sealer: dict[str, object] | None = None  # where the sealing key is (keyfile, pkcs11 modes)
    _sealing: Sealer | None = field(default=None, repr=False, compare=False)

    # -- persistence -------------------------------------------------------------------------
    @classmethod
    def load(cls, home: Path) -> KeyStore:
        path = home / KEYSTORE_FILE
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT:
                raise CustodianError("The vault's key store has an unknown format.")
            return cls(
                path=path,
                vault_id=doc["vault_id"],
                mode=doc["mode"],
                kdf=doc.get("kdf"),
                masters=dict(doc.get("masters", {})),
                index_keys=dict(doc["index_keys"]),
                current_kid=doc["current_kid"],
                index_cipher=dict(doc.get("index_cipher") or {}),
                pending_index=str(doc.get("pending_index") or ""),
                sealer=doc.get("sealer"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CustodianError("The vault's key store is missing or damaged.") from exc

    def save(self) -> None:
        doc = {
            "format": FORMAT,
            "vault_id": self.vault_id,
            "mode": self.mode,
            "kdf": self.kdf,
            "masters": self.masters,
            "index_keys": self.index_keys,
            "current_kid": self.current_kid,
            "index_cipher": self.index_cipher,
            **({"pending_index": self.pending_index} if self.pending_index else {}),
            **({"sealer": self.sealer} if self.sealer else {}),
        }
        write_durable(self.path, json.dumps(doc, indent=1).encode())

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def create(cls, home: Path, *, passphrase: str | None, use_keyring: bool,
               sealer: Sealer | None = None) -> tuple[KeyStore, Keys]:
        """A new key store, not yet saved: its file appearing is what marks the vault as made.
        With a ``sealer`` the master key is sealed by it (no passphrase, no keyring)."""
        store = cls(path=home / KEYSTORE_FILE, vault_id=secrets.token_hex(16),
                    mode=sealer.mode if sealer else "keyring" if use_keyring else "passphrase")
        if sealer is not None:
            store._seal_with(sealer, home)
        elif not use_keyring:
            if not passphrase:
                raise VaultLocked("A passphrase is needed to protect the vault's master key.")
            store.kdf = new_kdf()
        master = os.urandom(32)
        kid = store._add_master(master, passphrase)
        index_key = os.urandom(32)
        store.index_keys[kid] = _b64(wrap(master, index_key, store._index_aad(kid)))
        store.current_kid = kid
        return store, Keys(store.vault_id, kid, {kid: master}, index_key)

    def _add_master(self, master: bytes, passphrase: str | None) -> str:
        kid = secrets.token_hex(4)
        if self.mode == "keyring":
            _keyring().set_password(KEYRING_SERVICE, self._keyring_name(kid), _b64(master))
        elif self.mode in SEALED_MODES:
            self.masters[kid] = _b64(self.sealing().seal(master, self._master_aad(kid)))
        else:
            assert passphrase is not None
            self.masters[kid] = _b64(wrap(self._kek(passphrase), master, self._master_aad(kid)))
        return kid

    # -- unlocking ---------------------------------------------------------------------------
    def unlock(self, passphrase_source: PassphraseSource) -> Keys:
        passphrase = None
        if self.mode == "passphrase":
            passphrase = passphrase_source()
            if not passphrase:
                raise VaultLocked(
                    "The vault is protected by a passphrase: set CUSTODIAN_PASSPHRASE or enter it."
                )
        kek = self._kek(passphrase) if passphrase is not None else None
        masters = {kid: self._read_master(kid, kek) for kid in self.index_keys}
        current = masters[self.current_kid]
        try:
            index_key = unwrap(current, _unb64(self.index_keys[self.current_kid]),
                               self._index_aad(self.current_kid))
        except InvalidTag as exc:
            raise VaultLocked("The vault's index key could not be unwrapped.") from exc
        return Keys(self.vault_id, self.current_kid, masters, index_key)

    def _read_master(self, kid: str, kek: bytes | None) -> bytes:
        if self.mode == "keyring":
            try:
                value = _keyring().get_password(KEYRING_SERVICE, self._keyring_name(kid))
            except Exception as exc:
                raise VaultLocked("The OS keyring refused to give out the vault's master key.") from exc
            if value is None:
                raise VaultLocked("The OS keyring does not hold this vault's master key.")
            return _unb64(value)
        if self.mode in SEALED_MODES:
            if kid not in self.masters:
                raise VaultLocked("The vault's key store lacks one of its sealed master keys.")
            return self.sealing().unseal(_unb64(self.masters[kid]), self._master_aad(kid))
        assert kek is not None
        try:
            return unwrap(kek, _unb64(self.masters[kid]), self._master_aad(kid))
        except (InvalidTag, KeyError) as exc:
            raise VaultLocked("The passphrase is wrong: the vault could not be unlocked.") from exc

    # -- rotation ----------------------------------------------------------------------------
    def begin_rotation(self, keys: Keys, passphrase: str | None) -> str:
        """Add a new master and wrap the index key with it; the old one stays until finished."""
        master = os.urandom(32)
        kid = self._add_master(master, passphrase)
        self.index_keys[kid] = _b64(wrap(master, keys.index_key, self._index_aad(kid)))
        self.save()
        keys.masters[kid] = master
        return kid

    def finish_rotation(self, keys: Keys, new_kid: str) -> None:
        """Make ``new_kid`` current and forget every other master (after data keys are re-wrapped)."""
        old = [kid for kid in self.index_keys if kid != new_kid]
        self.current_kid = new_kid
        keys.current_kid = new_kid
        for kid in old:
            self.index_keys.pop(kid, None)
            self.masters.pop(kid, None)
        self.save()
        for kid in old:
            keys.masters.pop(kid, None)
            if self.mode == "keyring":
                # A stale entry that cannot be deleted wraps nothing any more.
                with contextlib.suppress(Exception):
                    _keyring().delete_password(KEYRING_SERVICE, self._keyring_name(kid))

    # -- the index key -----------------------------------------------------------------------
    def stage_index_key(self, keys: Keys, index_key: bytes) -> None:
        """Keep a new index key durably before the index is re-encrypted under it."""
        self.pending_index = _b64(wrap(keys.masters[self.current_kid], index_key,
                                       self._index_aad(self.current_kid, pending=True)))
        self.save()

    def staged_index_key(self, keys: Keys) -> bytes | None:
        """The staged index key of an interrupted renewal, if any."""
        if not self.pending_index:
            return None
        return unwrap(keys.masters[self.current_kid], _unb64(self.pending_index),
                      self._index_aad(self.current_kid, pending=True))

    def settle_index_key(self, keys: Keys, index_key: bytes) -> None:
        """``index_key`` is the one the index is encrypted with; the staged one goes."""
        self.index_keys[self.current_kid] = _b64(wrap(keys.masters[self.current_kid], index_key,
                                                      self._index_aad(self.current_kid)))
        self.pending_index = ""
        self.save()
        keys.index_key = index_key

    # -- the passphrase ----------------------------------------------------------------------
    def change_passphrase(self, keys: Keys, passphrase: str) -> None:
        """Wrap every master key under a new passphrase (fresh Argon2id salt); images, data keys
        and the index are untouched."""
        if self.mode != "passphrase":
            raise CustodianError(f"This vault's master key is {WHERE.get(self.mode, self.mode)}, not a "
                                 "passphrase: there is no passphrase to change.")
        self.kdf = new_kdf()
        kek = self._kek(passphrase)
        self.masters = {kid: _b64(wrap(kek, master, self._master_aad(kid)))
                        for kid, master in keys.masters.items() if kid in self.index_keys}
        self.save()

    # -- helpers -----------------------------------------------------------------------------
    def _kek(self, passphrase: str) -> bytes:
        return derive_kek(passphrase, self.kdf or {})

    def adopt(self, masters: dict[str, bytes], *, passphrase: str | None, use_keyring: bool,
              sealer: Sealer | None = None) -> Keys:
        """Protect restored master keys on this machine (OS keyring, wrapped with ``passphrase``, or
        sealed by ``sealer`` in the key store's folder) under their own key ids, so the restored
        index and data keys open with them."""
        if set(masters) != set(self.index_keys):
            raise CustodianError("The backup's master keys do not match its index keys.")
        self.mode = sealer.mode if sealer else "keyring" if use_keyring else "passphrase"
        self.masters = {}
        self.kdf = None
        self.sealer = self._sealing = None
        if sealer is not None:
            self._seal_with(sealer, self.path.parent)
            self.masters = self.resealed(masters, sealer)
        elif use_keyring:
            for kid, master in masters.items():
                _keyring().set_password(KEYRING_SERVICE, self._keyring_name(kid), _b64(master))
        else:
            if not passphrase:
                raise VaultLocked("A passphrase is needed to protect the restored vault's master key.")
            self.kdf = new_kdf()
            kek = self._kek(passphrase)
            self.masters = {kid: _b64(wrap(kek, master, self._master_aad(kid)))
                            for kid, master in masters.items()}
        index_key = unwrap(masters[self.current_kid], _unb64(self.index_keys[self.current_kid]),
                           self._index_aad(self.current_kid))
        return Keys(self.vault_id, self.current_kid, dict(masters), index_key)

    # -- sealed modes ------------------------------------------------------------------------
    def sealing(self) -> Sealer:
        """The sealer of a key file or token vault, as the key store describes it."""
        if self._sealing is None:
            if not self.sealer or self.mode not in SEALED_MODES:
                raise CustodianError("The vault's key store does not say where its sealing key is.")
            self._sealing = open_sealer(self.path.parent, self.sealer)
        return self._sealing

    def _seal_with(self, sealer: Sealer, home: Path) -> None:
        sealer.provision(home, self.vault_id)
        self.sealer, self._sealing = sealer.describe(), sealer

    def resealed(self, masters: Mapping[str, bytes], sealer: Sealer) -> dict[str, str]:
        """Every master key this key store lists, sealed by ``sealer`` (nothing is changed yet)."""
        return {kid: _b64(sealer.seal(masters[kid], self._master_aad(kid))) for kid in self.index_keys}

    def move_to(self, sealer: Sealer, sealed: dict[str, str]) -> None:
        """The master keys are ``sealed`` (by :meth:`resealed`) under ``sealer`` from now on; what
        protected them before is destroyed afterwards, since it protects nothing any more."""
        previous = self.sealing() if self.mode in SEALED_MODES else None
        kids, was_keyring = list(sealed), self.mode == "keyring"
        self.mode, self.masters, self.kdf = sealer.mode, sealed, None
        self.sealer, self._sealing = sealer.describe(), sealer
        self.save()
        if previous is not None:
            previous.retire()
        for kid in kids if was_keyring else ():
            with contextlib.suppress(Exception):
                _keyring().delete_password(KEYRING_SERVICE, self._keyring_name(kid))

    def _keyring_name(self, kid: str) -> str:
        return f"{self.vault_id}/{kid}"

    def _master_aad(self, kid: str) -> bytes:
        return f"custodian/master/{self.vault_id}/{kid}".encode()

    def _index_aad(self, kid: str, *, pending: bool = False) -> bytes:
        return f"custodian/index{'-pending' if pending else ''}/{self.vault_id}/{kid}".encode()
