"""TLS identities and contexts for every connection the workstation makes (BCP 195).

A peer's trust anchors, the workstation's certificate and its private key are kept in the
encrypted index, never as files. Python's ``ssl`` only loads a private key from a path, so the
key is handed over re-encrypted under a one-time password, through an anonymous memory file
where the OS has one: nothing usable ever reaches the disk.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.errors import UsageError

# TLS 1.2 suites BCP 195 recommends (forward secret, AEAD); TLS 1.3 suites are all acceptable.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL"


@dataclass(frozen=True)
class TlsIdentity:
    """Trust anchors (CA certificates) plus this workstation's certificate chain and key, as PEM."""

    ca_pem: str
    cert_pem: str
    key_pem: str = field(metadata={"secret": True})  # never leaves the workstation service

    @classmethod
    def from_files(cls, ca: Path, cert: Path, key: Path) -> TlsIdentity:
        try:
            texts = [p.read_text() for p in (ca, cert, key)]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"Could not read a certificate or key file: {exc}.") from None
        identity = cls(*texts)
        identity.check()
        return identity

    def check(self) -> None:
        """Refuse an identity that could never work, with a plain reason, before it is stored."""
        from cryptography import x509  # (certificates load where they are used: issue 24)
        from cryptography.hazmat.primitives import serialization

        try:
            cas = x509.load_pem_x509_certificates(self.ca_pem.encode())
        except ValueError:
            raise UsageError("The CA file holds no PEM certificate.") from None
        try:
            chain = x509.load_pem_x509_certificates(self.cert_pem.encode())
        except ValueError:
            raise UsageError("The certificate file holds no PEM certificate.") from None
        try:
            key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        except (ValueError, TypeError):
            raise UsageError("The key file holds no unencrypted PEM private key.") from None
        own = chain[0]
        if own.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) != \
                key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
            raise UsageError("The private key does not belong to the certificate.")
        now = datetime.now(UTC)
        for cert in (own, *cas):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise UsageError(f"The certificate '{cert.subject.rfc4514_string()}' is not valid "
                                 f"now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                                 f"{cert.not_valid_after_utc:%Y-%m-%d}).")

    def subject(self) -> str:
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.cert_pem.encode())[0].subject.rfc4514_string()


def _base_context(purpose: int, identity: TlsIdentity) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=identity.ca_pem)
    with _key_file(identity) as (path, password):
        ctx.load_cert_chain(path, password=password)
    return ctx


def client_context(identity: TlsIdentity) -> ssl.SSLContext:
    """Mutual TLS towards a server whose certificate must chain to ``identity``'s CAs and name it."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, identity)
    ctx.check_hostname = True
    return ctx


def server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """Mutual TLS towards clients, which must present a certificate from ``identity``'s CAs."""
    return _base_context(ssl.PROTOCOL_TLS_SERVER, identity)


@contextlib.contextmanager
def _key_file(identity: TlsIdentity) -> Iterator[tuple[str, bytes]]:
    from cryptography.hazmat.primitives import serialization

    password = secrets.token_bytes(32)
    key = serialization.load_pem_private_key(identity.key_pem.encode(), password=None)
    sealed = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(password))
    content = identity.cert_pem.encode() + b"\n" + sealed
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("custodian-tls", 0)
        try:
            os.write(fd, content)
            yield f"/proc/self/fd/{fd}", password
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(delete=False) as handle:  # encrypted; removed at once
        handle.write(content)
    try:
        yield handle.name, password
    finally:
        os.unlink(handle.name)
