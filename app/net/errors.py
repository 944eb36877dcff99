"""What a failed association raises, apart from the code that makes associations: the gate and the
services catch these without loading pynetdicom (issue 24: a command imports only what it uses)."""

from __future__ import annotations

from app.errors import CustodianError


class PeerError(CustodianError):
    """An association could not be made or broke off; the message says why, plainly.

    ``transient``: the peer is away or the line broke (worth trying again later); otherwise it
    refused us (AE titles, certificates), which waiting will not mend.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class TlsRequired(PeerError):
    """A plain node, while the site requires TLS: refused before anything leaves (and audited by
    the gate as a Security Alert)."""

    def __init__(self, node: str) -> None:
        super().__init__(f"The site requires TLS on every DICOM connection, and the PACS node '{node}' is "
                         "set without it, so nothing was sent or asked. An administrator sets the node "
                         "again with --tls-ca, --tls-cert and --tls-key.", transient=False)
        self.node = node
