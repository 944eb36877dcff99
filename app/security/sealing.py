"""Where a service vault's master keys are sealed, so that it unlocks without a person present.

A workstation service runs under its own OS account and must open the vault at boot, so no
passphrase and no user's keyring entry can hold its master key. It is sealed instead:

- in a PKCS#11 token (the machine's TPM through tpm2-pkcs11, a site HSM; SoftHSM2 in the tests)
  by an AES-256 key generated in the token, sensitive and never extractable, with CKM_AES_GCM;
  the token also holds the audit checkpoint key, an Ed25519 pair made there (CKM_EDDSA), so
  nobody holding the vault's files and keys can re-sign a rewritten trail; or
- where there is no token, by a random key in a file only the service account can read (0400).

Both say in one plain sentence why the vault stays locked (no token, wrong PIN, no key file),
never with the PIN. The key store records :meth:`Sealer.describe`, never a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.atomicfile import write_durable
from app.errors import CustodianError, VaultLocked

if TYPE_CHECKING:
    from pkcs11 import ObjectClass

# python-pkcs11 is imported inside the code that talks to a token (as in app.security.card): a vault
# whose key is under a passphrase, the keyring or a key file never loads it (issue 24).

KEK_FILE = "master.kek"
PIN_FILE = "pkcs11.pin"
PIN_ENV = "CUSTODIAN_PKCS11_PIN"
SEALED_MODES = ("keyfile", "pkcs11")
ED25519_OID = "1.3.101.112"  # RFC 8410
NONCE = 12


class SigningKey(Protocol):
    """What the audit trail needs of its checkpoint key: a cryptography Ed25519PrivateKey is one,
    and so is :class:`TokenSigningKey`, whose private half never leaves the token."""

    def sign(self, data: bytes, /) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


class Sealer(Protocol):
    """Seals master keys under a key-encryption key kept outside the vault's files' reach."""

    @property
    def mode(self) -> str:
        """The key store's mode: "keyfile" or "pkcs11"."""
        ...

    def provision(self, home: Path, vault_id: str) -> None:
        """Make the key-encryption key for vault ``vault_id`` in ``home``, if it is not there yet."""
        ...

    def seal(self, key: bytes, aad: bytes) -> bytes: ...

    def unseal(self, blob: bytes, aad: bytes) -> bytes: ...

    def describe(self) -> dict[str, object]:
        """Where the key-encryption key is, as the key store records it (no secret)."""
        ...

    def signing_key(self, *, create: bool) -> SigningKey | None:
        """The audit checkpoint key this sealer keeps (None: the store keeps one, wrapped)."""
        ...

    def retire(self) -> None:
        """Destroy the key-encryption key once nothing is sealed under it (best effort)."""
        ...


def open_sealer(home: Path, description: Mapping[str, Any]) -> Sealer:
    """The sealer a key store (or the index, for the checkpoint key) describes."""
    mode = description.get("mode")
    if mode == "keyfile":
        return KeyFileSealer(home)
    if mode == "pkcs11":
        slot = description.get("slot")
        return TokenSealer(str(description["module"]), slot=None if slot is None else int(slot),
                           token=description.get("token"), home=home, vault_id=str(description["vault_id"]))
    raise CustodianError("The vault's key store names an unknown place for its master key.")


# ---------------------------------------------------------------------------- files only we read
def read_private(path: Path, what: str) -> bytes:
    """A secret file that only this account may read; VaultLocked saying plainly what is wrong."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise VaultLocked(f"The {what} {path} may be read by other accounts (mode {mode:04o}): make it "
                              "readable by the service account only (chmod 400) and try again.")
        return path.read_bytes()
    except FileNotFoundError:
        raise VaultLocked(f"The {what} {path} is missing, so the vault cannot be unlocked.") from None
    except PermissionError:
        raise VaultLocked(f"The {what} {path} cannot be read by this account: run Custodian as the "
                          "service account that made the vault.") from None
    except OSError as exc:
        raise VaultLocked(f"The {what} {path} could not be read ({exc.strerror}).") from None


def write_private(path: Path, data: bytes) -> None:
    """A secret file readable by this account only (0400), replaced whole."""
    for stale in (path, path.with_name(path.name + ".tmp")):
        stale.unlink(missing_ok=True)  # a 0400 file cannot be opened for writing, even by its owner
    write_durable(path, data, mode=0o400)
    os.chmod(path, 0o400)


# ---------------------------------------------------------------------------- the key file
@dataclass
class KeyFileSealer:
    """A random AES-256 key in ``<home>/master.kek``, mode 0400, owned by the account that made it
    (the service's): the OS, not the program, keeps other accounts from the master key."""

    home: Path | None = None

    @property
    def mode(self) -> str:
        return "keyfile"

    @property
    def path(self) -> Path:
        if self.home is None:
            raise CustodianError("The key file's folder is not known yet.")
        return self.home / KEK_FILE

    def provision(self, home: Path, vault_id: str) -> None:
        self.home = home
        if not self.path.exists():  # (a move that was interrupted made it already)
            write_private(self.path, os.urandom(32))

    def _kek(self) -> bytes:
        kek = read_private(self.path, "key file")
        if len(kek) != 32:
            raise VaultLocked(f"The key file {self.path} is damaged (it must hold a 256-bit key).")
        return kek

    def seal(self, key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + AESGCM(self._kek()).encrypt(nonce, key, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self._kek()).decrypt(blob[:NONCE], blob[NONCE:], aad)
        except InvalidTag:
            raise VaultLocked(f"The key file {self.path} does not open this vault's master key (is it "
                              "another vault's?).") from None

    def describe(self) -> dict[str, object]:
        return {"mode": "keyfile", "file": KEK_FILE}

    def signing_key(self, *, create: bool) -> SigningKey | None:
        return None

    def retire(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


# ---------------------------------------------------------------------------- the PKCS#11 token
# PKCS#11 login state belongs to the process and the token, not to one session: a second login
# fails and any logout ends every session's. So each operation opens a session, logs in, works
# and logs out, one at a time; a library is initialised again when a vault is opened (a token
# plugged in or removed since is seen) and after any failure. A PIN the token refused is not
# offered to it again (a service retrying at boot would otherwise lock the token, or a TPM's
# dictionary-attack protection would lock it out) until the PIN it is given changes.
_TOKEN_LOCK = threading.RLock()
_STALE: set[str] = set()
_REFUSED: set[str] = set()  # digests of (module, token, PIN) the token refused


def _library(module: str, fresh: bool) -> Any:
    import pkcs11

    try:
        lib = pkcs11.lib(module)
        if fresh or module in _STALE:
            lib.reinitialize()
        _STALE.discard(module)
        return lib
    except (OSError, pkcs11.PKCS11Error) as exc:
        _STALE.add(module)
        raise VaultLocked(f"The PKCS#11 module {module} could not be loaded or started.") from exc


@dataclass
class TokenSealer:
    """An AES-256 key generated in a PKCS#11 token (sensitive, not extractable, a token object
    labelled with the vault id) seals the master keys with CKM_AES_GCM inside the token. The PIN
    comes from CUSTODIAN_PKCS11_PIN, else ``<home>/pkcs11.pin`` (0400), written when the key is
    made so that the service boots without a person."""

    module: str
    slot: int | None = None
    token: str | None = None  # the token's label, when no slot number is given
    pin: str | None = field(default=None, repr=False)  # given when the key is made
    home: Path | None = None
    vault_id: str = ""
    _fresh: bool = field(default=True, init=False, repr=False)  # start the library afresh first

    @property
    def mode(self) -> str:
        return "pkcs11"

    @property
    def where(self) -> str:
        named = [f"slot {self.slot}"] if self.slot is not None else []
        return ", ".join(named + ([f"label '{self.token}'"] if self.token else [])) or "no slot named"

    @property
    def master_label(self) -> str:
        return f"custodian-master-{self.vault_id}"

    @property
    def audit_label(self) -> str:
        return f"custodian-audit-{self.vault_id}"

    def describe(self) -> dict[str, object]:
        return {"mode": "pkcs11", "module": self.module, "slot": self.slot, "token": self.token,
                "vault_id": self.vault_id, "key": self.master_label}

    # -- reaching the token ------------------------------------------------------------------
    def _pin(self) -> str:
        pin = self.pin or os.environ.get(PIN_ENV)
        if pin:
            return pin
        if self.home is None:
            raise VaultLocked(f"No PIN for the PKCS#11 token: set {PIN_ENV}.")
        return read_private(self.home / PIN_FILE, "token PIN file").decode("utf-8").strip()

    def _find(self, lib: Any) -> Any:
        import pkcs11

        for slot in lib.get_slots(token_present=True):
            if self.slot is not None and slot.slot_id != self.slot:
                continue
            try:
                token = slot.get_token()
            except pkcs11.PKCS11Error:
                continue
            if self.token is None or token.label == self.token:
                return token
        return None

    def _token(self) -> Any:
        if self.slot is None and self.token is None:
            raise CustodianError("Name the PKCS#11 token by its slot number or its label.")
        found = self._find(_library(self.module, self._fresh))
        if found is None and not self._fresh:  # plugged in since the library started?
            found = self._find(_library(self.module, True))
        self._fresh = False
        if found is None:
            raise VaultLocked(f"The PKCS#11 token ({self.where}) is not present: the vault stays locked "
                              "until it is back.")
        return found

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """A logged-in read-write session for one operation; every token failure as VaultLocked."""
        import pkcs11

        refused = VaultLocked(f"The PKCS#11 token ({self.where}) refused the PIN: set {PIN_ENV} to the "
                              f"right one, or correct {PIN_FILE} in the vault's folder.")
        with _TOKEN_LOCK:
            try:
                token = self._token()
                pin = self._pin()
                tried = hashlib.sha256(f"{self.module}\0{token.serial}\0{pin}".encode()).hexdigest()
                if tried in _REFUSED:
                    raise refused
                session = token.open(rw=True, user_pin=pin)
            except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
                _REFUSED.add(tried)
                _STALE.add(self.module)  # (the refused login's session is ended by starting afresh)
                raise refused from None
            except pkcs11.PinLocked:
                raise VaultLocked(f"The PKCS#11 token ({self.where}) is locked after too many wrong PINs: "
                                  "its security officer must unlock it.") from None
            except pkcs11.PKCS11Error as exc:
                raise self._failed(exc) from exc
            try:
                yield session
            except pkcs11.PKCS11Error as exc:
                raise self._failed(exc) from exc
            finally:
                with contextlib.suppress(pkcs11.PKCS11Error):
                    session.close()

    def _failed(self, exc: Exception) -> VaultLocked:
        import pkcs11

        _STALE.add(self.module)
        if isinstance(exc, pkcs11.NoSuchKey):
            return VaultLocked(f"The PKCS#11 token ({self.where}) holds no key for this vault: it was "
                               "deleted, or this is another token.")
        return VaultLocked(f"The PKCS#11 token ({self.where}) could not be used ({type(exc).__name__}): "
                           "it may have been removed; the vault stays locked until it answers.")

    # -- the master key ----------------------------------------------------------------------
    def provision(self, home: Path, vault_id: str) -> None:
        from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

        self.home, self.vault_id = home, vault_id
        with self._session() as session:
            if not _objects(session, ObjectClass.SECRET_KEY, self.master_label):
                session.generate_key(
                    KeyType.AES, 256, label=self.master_label, store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                              Attribute.PRIVATE: True, Attribute.WRAP: False, Attribute.UNWRAP: False})
        # The PIN has just opened the token: keep it for boots without a person.
        pin = self._pin()
        pin_file = home / PIN_FILE
        if not pin_file.exists() or read_private(pin_file, "token PIN file").decode().strip() != pin:
            write_private(pin_file, pin.encode("utf-8"))

    def seal(self, key: bytes, aad: bytes) -> bytes:
        from pkcs11 import GCMParams, KeyType, Mechanism, ObjectClass

        nonce = os.urandom(NONCE)
        with self._session() as session:
            kek = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=self.master_label)
            return nonce + bytes(kek.encrypt(key, mechanism=Mechanism.AES_GCM,
                                             mechanism_param=GCMParams(nonce, aad)))

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        import pkcs11
        from pkcs11 import GCMParams, KeyType, Mechanism, ObjectClass

        with self._session() as session:
            kek = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=self.master_label)
            try:
                return bytes(kek.decrypt(blob[NONCE:], mechanism=Mechanism.AES_GCM,
                                         mechanism_param=GCMParams(blob[:NONCE], aad)))
            except pkcs11.PKCS11Error:
                raise VaultLocked(f"The key in the PKCS#11 token ({self.where}) does not open this "
                                  "vault's master key.") from None

    # -- the audit checkpoint key ------------------------------------------------------------
    def signing_key(self, *, create: bool) -> SigningKey | None:
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
        from pkcs11.util.ec import encode_named_curve_parameters

        with self._session() as session:
            public = _objects(session, ObjectClass.PUBLIC_KEY, self.audit_label)
            if not public:
                if not create:
                    raise pkcs11.NoSuchKey(self.audit_label)
                params = session.create_domain_parameters(
                    KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
                    local=True)
                params.generate_keypair(
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True, label=self.audit_label,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                      Attribute.PRIVATE: True, Attribute.DERIVE: False})
                public = _objects(session, ObjectClass.PUBLIC_KEY, self.audit_label)
            point = bytes(public[0][Attribute.EC_POINT])
        # CKA_EC_POINT is a DER OCTET STRING around the 32-byte key (some tokens give it bare).
        raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
        return TokenSigningKey(self, Ed25519PublicKey.from_public_bytes(raw))

    def retire(self) -> None:
        from pkcs11 import Attribute

        with contextlib.suppress(CustodianError), self._session() as session:
            for label in (self.master_label, self.audit_label):
                for obj in list(session.get_objects({Attribute.LABEL: label})):
                    obj.destroy()
        if self.home is not None:
            with contextlib.suppress(OSError):
                (self.home / PIN_FILE).unlink()


def _objects(session: Any, kind: ObjectClass, label: str) -> list[Any]:
    from pkcs11 import Attribute

    return list(session.get_objects({Attribute.CLASS: kind, Attribute.LABEL: label}))


class TokenSigningKey:
    """The audit checkpoint key in the token: signing happens there (CKM_EDDSA); only the public
    half, read once, is in memory."""

    def __init__(self, sealer: TokenSealer, public: Ed25519PublicKey) -> None:
        self._sealer = sealer
        self._public = public

    def sign(self, data: bytes, /) -> bytes:
        from pkcs11 import KeyType, Mechanism, ObjectClass

        with self._sealer._session() as session:
            key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label=self._sealer.audit_label)
            return bytes(key.sign(data, mechanism=Mechanism.EDDSA))

    def public_key(self) -> Ed25519PublicKey:
        return self._public
