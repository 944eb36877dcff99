"""Who may open an association with the storage SCP: a claimed AE title is not an identity.

Anyone can write any AE title into an A-ASSOCIATE-RQ. So a plain sender must also come from one
of the addresses of the node whose AE title it claims (host names resolved when it asks, kept
briefly), and a TLS sender must present the certificate recorded with that node, not merely one
from the site's CA. Under the site's ``require_tls`` plain senders are refused whoever they claim
to be. The SCP turns a refusal into an A-ASSOCIATE-RJ and the vault audits it.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.net.nodes import Node

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVED_FOR = 60.0  # seconds a host name's addresses are kept: DNS is asked at most this often


@dataclass(frozen=True)
class Peer:
    """Who is asking, as the connection shows it: its address and, over TLS, its certificate."""

    address: str
    secure: bool = False
    certificate: x509.Certificate | None = None

    @classmethod
    def of(cls, address: str, sock: socket.socket | None) -> Peer:
        if not isinstance(sock, ssl.SSLSocket):
            return cls(address)
        der = sock.getpeercert(binary_form=True)
        return cls(address, True, x509.load_der_x509_certificate(der) if der else None)


def address_of(text: str) -> Address | None:
    """An IP address, an IPv4 address mapped into IPv6 (a dual-stack listener's) as itself."""
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def resolve(host: str) -> frozenset[Address]:
    """Every address ``host`` stands for (itself, for an IP address); none when it does not resolve."""
    if (literal := address_of(host)) is not None:
        return frozenset({literal})
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(a for info in infos if (a := address_of(str(info[4][0]))) is not None)


def carries(certificate: x509.Certificate, name: str) -> bool:
    """Whether ``certificate`` names ``name``: its whole subject (``CN=..,O=..``), its common name,
    or a DNS name or IP address among its subject alternative names. Exactly: no wildcards."""
    wanted = name.strip().lower()
    if "=" in wanted:
        return certificate.subject.rfc4514_string().lower() == wanted
    names = {str(a.value).lower() for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alternative = x509.SubjectAlternativeName([])
    names |= {n.lower() for n in alternative.get_values_for_type(x509.DNSName)}
    addresses = set(alternative.get_values_for_type(x509.IPAddress))
    return wanted in names or address_of(wanted) in addresses


class Admission:
    """The SCP's check of each association request, made once the request has arrived."""

    def __init__(self, nodes: Sequence[Node], *, require_tls: bool,
                 resolver: Callable[[str], frozenset[Address]] = resolve) -> None:
        self._nodes: dict[str, list[Node]] = {}
        for node in nodes:
            if node.ae_title:  # (a DICOMweb node has none: it never opens an association)
                self._nodes.setdefault(node.ae_title, []).append(node)
        self.require_tls = require_tls
        self._resolver = resolver
        self._resolved: dict[str, tuple[float, frozenset[Address]]] = {}
        self._lock = threading.Lock()

    @property
    def ae_titles(self) -> list[str]:
        return sorted(self._nodes)

    def refusal(self, calling_ae: str, peer: Peer) -> str | None:
        """Why ``peer`` may not open an association as ``calling_ae``; None when it may."""
        nodes = self._nodes.get(calling_ae.strip(), [])
        if not nodes:
            return f"no PACS node has the AE title '{calling_ae.strip()}'"
        if peer.secure:
            return self._certificate_refusal(nodes, peer.certificate)
        if self.require_tls:
            return "the site requires TLS, and it connected without"
        sender = address_of(peer.address)
        if any(sender in self._addresses(host) for node in nodes for host in node.senders):
            return None
        expected = "; ".join(f"'{n.name}' sends from {', '.join(n.senders)}" for n in nodes)
        return f"it claimed the AE title '{calling_ae.strip()}' from {peer.address}, but {expected}"

    @staticmethod
    def _certificate_refusal(nodes: Sequence[Node], certificate: x509.Certificate | None) -> str | None:
        if certificate is None:
            return "it presented no certificate"
        if any(carries(certificate, node.certificate_name) for node in nodes):
            return None
        expected = "; ".join(f"'{n.name}' must present {n.certificate_name}" for n in nodes)
        return f"its certificate ({certificate.subject.rfc4514_string()}) is not its node's: {expected}"

    def _addresses(self, host: str) -> frozenset[Address]:
        """``host``'s addresses, resolved now unless resolved within RESOLVED_FOR seconds."""
        now = time.monotonic()
        with self._lock:
            kept = self._resolved.get(host)
        if kept is not None and now - kept[0] < RESOLVED_FOR:
            return kept[1]
        found = self._resolver(host)
        with self._lock:
            self._resolved[host] = (now, found)
        return found
