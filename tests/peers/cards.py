"""Smart cards for the tests: a SoftHSM2 token (the real library) holding an EC key made on the token,
as a card makes its own, and the certificate a test's card CA issued for that key; the CA's CRL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from app.security.card import UPN
from tests.peers.softhsm import MODULE, softhsm_conf

PIN = "123456"
KEY_ID = b"\x45"
SMARTCARD_LOGON = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")


def _utf8(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128  # (the short DER length form is enough here)
    return b"\x0c" + bytes([len(data)]) + data


class CardAuthority:
    """A site's card CA: issues card certificates and signs its CRL."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - timedelta(days=30)).not_valid_after(now + timedelta(days=365))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .add_extension(ski, critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.pem = folder / f"{name.replace(' ', '-').lower()}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, public: ec.EllipticCurvePublicKey, upn: str, *, days: tuple[int, int] = (-1, 30)
              ) -> x509.Certificate:
        """A card certificate for ``upn``, valid from ``days[0]`` to ``days[1]`` days from now."""
        now = datetime.now(UTC)
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, upn.partition("@")[0])]))
                .issuer_name(self.name).public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now + timedelta(days=days[0]))
                .not_valid_after(now + timedelta(days=days[1]))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, SMARTCARD_LOGON]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.OtherName(UPN, _utf8(upn))]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))

    def crl(self, path: Path, revoked: tuple[x509.Certificate, ...] = (), *, next_days: int = 7,
            extension: x509.ExtensionType | None = None) -> Path:
        """The CA's CRL listing ``revoked`` (with ``extension``, critical), written to ``path`` (PEM)."""
        now = datetime.now(UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.name)
                   .last_update(now - timedelta(minutes=1)).next_update(now + timedelta(days=next_days)))
        if extension is not None:
            builder = builder.add_extension(extension, critical=True)
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(now - timedelta(minutes=1)).build())
        path.write_bytes(builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path


@dataclass
class Card:
    """A SoftHSM2 token as a card: its own token directory, its key pair, its certificate."""

    conf: Path
    tokens: Path
    serial: str
    public: ec.EllipticCurvePublicKey
    module: str = MODULE

    @classmethod
    def make(cls, folder: Path) -> Card:
        conf = softhsm_conf(folder / "softhsm2.conf", folder / "tokens")
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "badge", "--pin", PIN,
                               "--so-pin", "so-pin-97531"], capture_output=True, text=True, check=True,
                              env=env)
        assert re.search(r"reassigned to slot (\d+)", made.stdout), made.stdout
        with _open(conf) as session:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
            public, _ = params.generate_keypair(store=True, id=KEY_ID, label="badge")
            loaded = serialization.load_der_public_key(encode_ec_public_key(public))
            assert isinstance(loaded, ec.EllipticCurvePublicKey)
            return cls(conf, folder / "tokens", session.token.serial.decode().strip(), loaded)

    def put(self, cert: x509.Certificate) -> None:
        """The card now holds ``cert`` (any earlier certificate is taken off)."""
        with _open(self.conf, self.module) as session:
            for old in list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})):
                old.destroy()
            session.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True, Attribute.ID: KEY_ID, Attribute.LABEL: "badge",
                Attribute.SUBJECT: cert.subject.public_bytes(),
                Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER)})

    def pull_out(self) -> None:
        """The card leaves the reader: its token is gone from SoftHSM2's token directory."""
        shutil.rmtree(self.tokens)
        self.tokens.mkdir()


def _open(conf: Path, module: str = MODULE) -> pkcs11.Session:
    """A read-write session with the token of SoftHSM2 configuration ``conf``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))  # (the library reads it when initialised)
        lib = pkcs11.lib(module)
        lib.reinitialize()
    return lib.get_token(token_label="badge").open(user_pin=PIN, rw=True)
