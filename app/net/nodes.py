"""PACS nodes: the DICOM peers this workstation talks to, kept in the encrypted index.

A node's TLS identity (trust anchors, our certificate and key) lives with it, like the audit
repository's: never as files. So does a DICOMweb node's password or token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit

import sqlcipher3

from app.errors import CustodianError, UsageError
from app.security.tls import TlsIdentity

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
WEB_AUTH = ("", "basic", "bearer")  # none, HTTP basic, a bearer token
_ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:%_-]{0,252}$")  # an IP address or a host name


def check_ae_title(value: str) -> str:
    """A DICOM AE title (PS3.5 AE): up to 16 characters, no backslash or control characters."""
    if not 0 < len(value) <= 16 or not value.strip() or "\\" in value or not value.isprintable() \
            or not value.isascii():
        raise UsageError(f"'{value}' is not a DICOM AE title: 1–16 ASCII characters, no backslash.")
    return value.strip()


@dataclass(frozen=True)
class Node:
    name: str
    ae_title: str
    host: str
    port: int
    tls: TlsIdentity | None = None
    server_name: str = ""  # the name the node's certificate must carry; the host when empty
    # Where the node's own associations come from (IP addresses or host names, resolved when one
    # arrives); none given: its host. A plain sender claiming its AE title from elsewhere is refused.
    addresses: tuple[str, ...] = ()
    # What a TLS sender claiming its AE title must carry in its certificate (a subject alternative
    # name, the subject's common name, or the whole subject); the server name or host when empty.
    peer_name: str = ""
    tls_required: bool = False  # the site requires TLS with it (require_tls): plain is refused
    # A DICOMweb node (QIDO-RS, WADO-RS, STOW-RS) has a base URL and no AE title; host and port are
    # the URL's. Its HTTPS certificate must chain to web_ca (PEM; empty: the system's CAs).
    url: str = ""
    web_ca: str = ""
    auth: str = ""  # one of WEB_AUTH
    user: str = ""  # the HTTP basic user
    secret: str = field(default="", repr=False, metadata={"secret": True})  # the password or token

    @classmethod
    def web(cls, name: str, url: str, *, web_ca: str = "", auth: str = "", user: str = "",
            secret: str = "") -> Node:
        """A DICOMweb node at ``url`` (its host and port taken from it)."""
        parts = urlsplit(url.strip())
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 0
        return cls(name, "", parts.hostname or "", port, url=url.strip().rstrip("/"), web_ca=web_ca,
                   auth=auth, user=user, secret=secret)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError("A node name is 1–32 letters, digits, dots, dashes or underscores.")
        if self.url:
            self._check_web()
        else:
            object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        if not self.host or not 0 < self.port < 65536:
            raise UsageError("A node needs a host and a port from 1 to 65535.")
        addresses = tuple(str(a).strip() for a in self.addresses)  # (a list, from JSON)
        if not all(_ADDRESS.match(a) for a in addresses):
            raise UsageError("A node's sending addresses are IP addresses or host names.")
        object.__setattr__(self, "addresses", addresses)
        if len(self.peer_name) > 255 or not self.peer_name.isprintable():
            raise UsageError("A node's peer name is the name in its certificate: up to 255 characters.")

    def _check_web(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise UsageError(f"'{self.url}' is not a DICOMweb base URL (https://host[:port]/path).")
        if self.auth not in WEB_AUTH or (self.auth == "basic") != bool(self.user):
            raise UsageError("A DICOMweb node authenticates with HTTP basic (and a user) or a bearer token.")
        if self.auth and parts.scheme != "https":
            raise UsageError("A password or token is only sent over HTTPS: give an https:// URL.")
        if self.web_ca:
            from cryptography import x509  # (certificates load where they are used: issue 24)

            try:
                x509.load_pem_x509_certificates(self.web_ca.encode())
            except ValueError:
                raise UsageError("The CA file holds no PEM certificate.") from None

    @property
    def secure(self) -> bool:
        """Whether what goes to it is encrypted (DICOM TLS, or HTTPS)."""
        return self.tls is not None or self.url.startswith("https://")

    @property
    def access_point(self) -> str:
        """Where it is reached, as the audit trail names it: the URL of a DICOMweb node, else the host."""
        return self.url or self.host

    @property
    def senders(self) -> tuple[str, ...]:
        """The addresses (or host names) its associations may come from."""
        return self.addresses or (self.host,)

    @property
    def certificate_name(self) -> str:
        """The name its sender's TLS certificate must carry."""
        return self.peer_name or self.server_name or self.host

    def describe(self) -> str:
        if self.url:
            how = {"basic": f"HTTP basic as {self.user}", "bearer": "a bearer token"}.get(self.auth)
            return f"DICOMweb at {self.url}" + (f", with {how}" if how else "")
        sends = f", sending from {', '.join(self.addresses)}" if self.addresses else ""
        named = f", its certificate naming {self.peer_name}" if self.peer_name else ""
        return f"{self.ae_title} at {self.host}:{self.port}{sends}{named}" + (" (TLS)" if self.tls else "")


class NodeBook:
    """The workstation's own nodes, under the site's (the managed policy's), which win by name and
    cannot be changed here. Under the site's ``require_tls`` every node read is marked so, and an
    association with a plain one is refused before it is made."""

    def __init__(self, conn: sqlcipher3.Connection, managed: Sequence[Node] = (), *,
                 require_tls: bool = False) -> None:
        self._conn = conn
        self._managed = {node.name: node for node in managed}
        self._require_tls = require_tls

    def put(self, node: Node) -> None:
        self._refuse_managed(node.name)
        self._conn.execute("INSERT OR REPLACE INTO nodes (name, config) VALUES (?, ?)",
                           (node.name, json.dumps(asdict(node))))

    def get(self, name: str) -> Node:
        if name in self._managed:
            return self._in_force(self._managed[name])
        row = self._conn.execute("SELECT config FROM nodes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise CustodianError(f"There is no PACS node named '{name}' ('custodian node list' shows them).")
        return self._in_force(_node(row[0]))

    def list(self) -> list[Node]:
        local = [_node(config) for (config,) in self._conn.execute("SELECT config FROM nodes ORDER BY name")]
        return sorted([self._in_force(n) for n in [*self._managed.values(),
                                                   *(n for n in local if n.name not in self._managed)]],
                      key=lambda node: node.name)

    def _in_force(self, node: Node) -> Node:
        return replace(node, tls_required=True) if self._require_tls else node

    def remove(self, name: str) -> None:
        self._refuse_managed(name)
        if self._conn.execute("DELETE FROM nodes WHERE name = ?", (name,)).rowcount != 1:
            raise CustodianError(f"There is no PACS node named '{name}'.")

    def _refuse_managed(self, name: str) -> None:
        if name in self._managed:
            raise UsageError(f"The node '{name}' is set by the site's managed policy; it cannot be changed "
                             "at the workstation.")


def _node(config: str) -> Node:
    data = json.loads(config)
    tls = TlsIdentity(**data["tls"]) if data.get("tls") else None
    return Node(**{**data, "tls": tls})
