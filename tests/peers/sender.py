"""A pynetdicom storage SCU that sends from a chosen loopback address (127.0.0.0/8 is all this
machine's, so a test can be "another host") with any AE title and, optionally, a TLS certificate:
the spoofing sender. DCMTK's storescu cannot bind its source address."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from app.security.tls import TlsIdentity, client_context
from tests.peers.pki import Authority, Issued


@dataclass
class Sent:
    established: bool
    rejection: tuple[int, int, int] | None = None  # (result, source, diagnostic) of an A-ASSOCIATE-RJ
    statuses: list[int] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(1 for s in self.statuses if s == 0x0000)


def send(port: int, datasets: Sequence[pydicom.Dataset], *, calling: str, source: str = "127.0.0.1",
         tls: tuple[Authority, Issued] | None = None, called: str = "CUSTODIAN") -> Sent:
    """C-STORE ``datasets`` to the SCP on 127.0.0.1:``port`` as ``calling``, from ``source``;
    ``tls``: the CA the SCP's certificate must chain to and this sender's certificate."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage)
    tls_args = None
    if tls is not None:
        authority, own = tls
        tls_args = (client_context(TlsIdentity.from_files(authority.cert, own.cert, own.key)), "localhost")
    assoc = ae.associate("127.0.0.1", port, ae_title=called, bind_address=(source, 0), tls_args=tls_args)
    if not assoc.is_established:
        answer = assoc.acceptor.primitive
        rejection = (int(answer.result or 0), int(answer.result_source or 0), int(answer.diagnostic or 0)) \
            if assoc.is_rejected and answer is not None else None
        return Sent(False, rejection)
    sent = Sent(True)
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            sent.statuses.append(int(status.Status) if status else -1)
    finally:
        if assoc.is_established:
            assoc.release()
    return sent


def echoed(port: int, calling: str) -> None:
    """A C-ECHO association to the SCP on ``port`` as ``calling``; OSError until it is accepted
    (a readiness check for :func:`tests.peers.ports.wait_listening`)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CUSTODIAN")
    if not assoc.is_established:
        raise OSError("not associated yet")
    assoc.release()
