"""Smart cards (badges) as directory users' second factor: the certificate on a PKCS#11 token.

At login the token is opened with the PIN (the card's own check, and its own retry counter), the
card's private key signs a fresh random challenge that the certificate's public key must verify
(the card is there, not a copy of its certificate), and the certificate must chain to the site's
card CA (cryptography's X.509 path validation), be within its dates and not be on the site's CRL
(a file or an http(s) URL; a CRL that cannot be read, is not the CA's, or is past its next update
refuses every card: fail closed).

The holder is the directory user whose login name is the part before "@" of the certificate's
User Principal Name (the SAN otherName 1.3.6.1.4.1.311.20.2.3 that Active Directory smart-card
logon uses), compared without case. A card without a UPN names nobody.

The module is CUSTODIAN_PKCS11_MODULE, else OpenSC's (real card readers through pcscd). SoftHSM2,
the tests' token, has no PIN retry limit of its own (a wrong PIN is CKR_PIN_INCORRECT every time,
never CKR_PIN_LOCKED); a real card locks itself after its own count, and says so (CKR_PIN_LOCKED),
which is reported as such. Either way Custodian's own lockout counts each wrong PIN.

python-pkcs11, urllib and X.509 path validation are imported inside the functions that use them,
so a command (or a login window) that never checks a card pays nothing for them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from app.errors import AuthenticationFailed, CustodianError, UsageError

MODULE_ENV = "CUSTODIAN_PKCS11_MODULE"
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
UPN = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
CRL_TIMEOUT = 3  # seconds a login waits for each answer of the host of a CRL at a URL
CRL_DEADLINE = 10  # seconds for the whole CRL (a hostile host may drip it, each answer within the timeout)
CRL_LIMIT = 32 * 2**20  # bytes: the largest CRL read (a big CA's is a few MB), so none fills the memory
# Refusals, as audited ("why"); the person is told a sentence that says the same.
WRONG_PIN, PIN_LOCKED, NO_CARD = "wrong card PIN", "card PIN locked by the card", "no card in the reader"
EXPIRED, NOT_YET, REVOKED = "card certificate expired", "card certificate not yet valid", "card revoked"
OTHER_CA, NOT_HOLDER = "card not issued by the site's card CA", "card holder is not this user"
NO_POSSESSION, CRL_UNUSABLE = "card could not prove it holds the key", "CRL unusable"


def module_path() -> str:
    """The PKCS#11 module that reads this station's cards."""
    return os.environ.get(MODULE_ENV) or OPENSC_MODULE


class CardRefused(AuthenticationFailed):
    """The card, its PIN or its certificate is not accepted; ``why`` is for the audit trail."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class CardUnavailable(CustodianError):
    """No answer from the cards at all (no card, no module, no usable CRL): a refusal that is not
    the card holder's failure, so it counts toward no lockout. ``why`` is for the audit trail."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class CardProof:
    """What a token showed: its certificate (DER), that its key signed our challenge, and which
    token it is (its serial, for noticing its removal)."""

    certificate: bytes
    token_serial: str


@dataclass(frozen=True)
class CardCheck:
    """The site's card settings: the card CA (PEM) and the CRL's path or URL (empty: none), and
    the PKCS#11 module that reads the cards; ``upn``: the user's whole User Principal Name where
    the directory has just given it (at a login), which the card's must then equal."""

    ca_pem: str
    crl: str = ""
    module: str = ""
    upn: str = ""

    def __post_init__(self) -> None:
        try:
            x509.load_pem_x509_certificates(self.ca_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise UsageError("Cards: the card CA must be a PEM certificate (--card-ca FILE).") from None

    def check(self, name: str, pin: str) -> CardProof:
        """The card proves it holds its key, and its certificate is valid, the site's and
        ``name``'s; CardRefused (the card holder's failure) or CardUnavailable otherwise."""
        proof = read_card(self.module or module_path(), pin)
        self.verify(x509.load_der_x509_certificate(proof.certificate), name)
        return proof

    def verify(self, cert: x509.Certificate, name: str) -> None:
        from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

        now = datetime.now(UTC)
        if cert.not_valid_after_utc < now:
            raise CardRefused(f"This card's certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}.",
                              EXPIRED)
        if cert.not_valid_before_utc > now:
            raise CardRefused("This card's certificate is not valid yet.", NOT_YET)
        roots = x509.load_pem_x509_certificates(self.ca_pem.encode("ascii"))
        try:
            PolicyBuilder().store(Store(roots)).time(now).build_client_verifier().verify(cert, [])
        except VerificationError:
            raise CardRefused("This card was not issued by the site's card CA.", OTHER_CA) from None
        if self.crl:
            _revocation(self.crl, roots, cert, now)
        upn = principal(cert)
        # The whole UPN where the directory gave one (jdoe@partner.example is not jdoe@hospital...),
        # else the login name before "@"; both compared without case, as AD does.
        if (upn.casefold() != self.upn.casefold() if self.upn
                else upn.partition("@")[0].casefold() != name.casefold()) or not upn:
            raise CardRefused("This card is not yours: its holder is another user.", NOT_HOLDER)


def principal(cert: x509.Certificate) -> str:
    """The card's User Principal Name (the SAN entry AD smart-card logon uses; "" where none)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for other in names.get_values_for_type(x509.OtherName):
        if other.type_id == UPN and other.value[:1] == b"\x0c":  # a DER UTF8String
            return _der_text(other.value)
    return ""


def _der_text(der: bytes) -> str:
    size, start = der[1], 2
    if size & 0x80:  # the long form: the next (size & 0x7f) bytes hold the length
        start = 2 + (size & 0x7F)
        size = int.from_bytes(der[2:start], "big")
    return der[start:start + size].decode("utf-8", "replace")


def _revocation(where: str, roots: list[x509.Certificate], cert: x509.Certificate, now: datetime) -> None:
    """CardRefused when ``cert`` is on the CRL at ``where``; CardUnavailable when that CRL cannot
    be read, is not signed by the card CA that issued ``cert`` (another CA's of the site's lists
    other serials), is partial, or is past its next update (fail closed)."""
    from http.client import HTTPException

    try:
        if where.startswith(("http://", "https://")):
            data = _download(where)
        else:
            with open(where, "rb") as file:
                data = file.read()
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
    except (OSError, ValueError, HTTPException):  # (HTTPException: a host that answers no HTTP)
        raise CardUnavailable(f"The site's card revocation list ({where}) cannot be read, so no card is "
                              "accepted until it can.", CRL_UNUSABLE) from None
    if crl.issuer != cert.issuer or not any(_signed_by(crl, root) for root in roots):
        raise CardUnavailable(f"The card revocation list at {where} is not signed by the site's card CA "
                              "that issued this card, so no card is accepted until it is replaced.",
                              CRL_UNUSABLE)
    if _partial(crl):
        raise CardUnavailable(f"The card revocation list at {where} is a partial one (a delta CRL, or one "
                              "for some certificates or reasons only), so no card is accepted until the "
                              "full list is there.", CRL_UNUSABLE)
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        raise CardUnavailable(f"The card revocation list at {where} is out of date (next update was due "
                              f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC), so no card is accepted until "
                              "it is renewed.", CRL_UNUSABLE)
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        raise CardRefused("This card has been revoked.", REVOKED)


def _download(url: str) -> bytes:
    """The CRL at ``url``, refused (OSError) past :data:`CRL_LIMIT` bytes or :data:`CRL_DEADLINE`
    seconds: a host on the network cannot hold a login or fill the memory. (urllib follows
    redirects to http, https and ftp only, never to a file.)"""
    import urllib.request

    deadline, data = time.monotonic() + CRL_DEADLINE, bytearray()
    with urllib.request.urlopen(url, timeout=CRL_TIMEOUT) as answer:
        while chunk := answer.read1(65536):
            data += chunk
            if len(data) > CRL_LIMIT or time.monotonic() > deadline:
                raise OSError("CRL too large or too slow")
    return bytes(data)


def _partial(crl: x509.CertificateRevocationList) -> bool:
    """Whether ``crl`` leaves cards out however fresh and well signed: a delta CRL lists only what
    changed since its base, and an issuing distribution point may scope it to CA or attribute
    certificates, some reasons, or another issuer's (a host on the network could serve either)."""
    extensions = crl.extensions
    with contextlib.suppress(x509.ExtensionNotFound):
        extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        return True
    try:
        point = extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return False
    return bool(point.only_contains_ca_certs or point.only_contains_attribute_certs or point.only_some_reasons
                or point.indirect_crl)


def _signed_by(crl: x509.CertificateRevocationList, root: x509.Certificate) -> bool:
    key = root.public_key()
    return (crl.issuer == root.subject and isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))
            and crl.is_signature_valid(key))


# ---------------------------------------------------------------------------------- the token
def _library(module: str) -> Any:
    """The module, initialised again so a card put in since is seen."""
    import pkcs11

    try:
        lib = pkcs11.lib(module)
        lib.reinitialize()
        return lib
    except (OSError, pkcs11.PKCS11Error):
        raise CardUnavailable(f"The card reader's PKCS#11 module {module} could not be loaded.",
                              "card module not loaded") from None


def read_card(module: str, pin: str) -> CardProof:
    """The first card holding a certificate with its private key: logged in with ``pin``, it signs a
    fresh challenge that the certificate's public key verifies."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    if not pin:
        raise CardRefused("Enter the card's PIN.", WRONG_PIN)
    for slot in _library(module).get_slots(token_present=True):
        try:
            token = slot.get_token()
            with token.open(user_pin=pin) as session:
                for cert in list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})):
                    keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                     Attribute.ID: cert[Attribute.ID]}))
                    for key in keys[:1]:  # (PKCS#11 allows one search at a time: each is read whole)
                        der = bytes(cert[Attribute.VALUE])
                        _prove(key, x509.load_der_x509_certificate(der))
                        return CardProof(der, _serial(token))
        except pkcs11.PinIncorrect:
            raise CardRefused("The card's PIN is not correct.", WRONG_PIN) from None
        except pkcs11.PinLocked:
            raise CardRefused("The card has locked its PIN after too many wrong ones; the card's issuer "
                              "can unblock it.", PIN_LOCKED) from None
        except (pkcs11.PKCS11Error, ValueError):  # gone, or a token that is no card of ours: the next
            continue
    raise CardUnavailable("No card with a certificate is in the reader: insert your card.", NO_CARD)


def _prove(key: Any, cert: x509.Certificate) -> None:
    """The token's key signs a random challenge, and the certificate's public key verifies it."""
    from pkcs11 import KeyType, Mechanism
    from pkcs11.util.ec import encode_ecdsa_signature

    challenge = secrets.token_bytes(32)
    public = cert.public_key()
    try:
        if key.key_type == KeyType.EC and isinstance(public, ec.EllipticCurvePublicKey):
            digest = hashes.Hash(hashes.SHA256())
            digest.update(challenge)
            raw = key.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
            public.verify(encode_ecdsa_signature(raw), challenge, ec.ECDSA(hashes.SHA256()))
        elif key.key_type == KeyType.RSA and isinstance(public, rsa.RSAPublicKey):
            signature = key.sign(challenge, mechanism=Mechanism.SHA256_RSA_PKCS)
            public.verify(signature, challenge, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise CardRefused("The card's key does not match its certificate.", NO_POSSESSION) from None


def _serial(token: Any) -> str:
    serial = token.serial
    return (serial.decode("ascii", "replace") if isinstance(serial, bytes) else str(serial)).strip()


def rescan(module: str) -> frozenset[str]:
    """:func:`serials` after initialising the module again (a module that sees cards put in only
    then, as SoftHSM2, sees them now)."""
    with contextlib.suppress(CardUnavailable):
        _library(module)
    return serials(module)


def serials(module: str) -> frozenset[str]:
    """The serials of the cards in the reader now (cheap, no PIN: for polling); none when the
    module cannot be loaded."""
    import pkcs11

    found = set()
    try:
        for slot in pkcs11.lib(module).get_slots(token_present=True):
            with contextlib.suppress(pkcs11.PKCS11Error):  # (a token gone mid-look: SoftHSM2's GeneralError)
                token = slot.get_token()
                if token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:  # (not SoftHSM2's free slot)
                    found.add(_serial(token))
    except (OSError, pkcs11.PKCS11Error):
        return frozenset()
    return frozenset(found)
