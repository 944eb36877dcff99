"""Associations this workstation opens on the upper layer of its own (the C-GET, whose images come
back to us as C-STOREs on the same association, takes the receive path the storage SCP takes).

A failure to associate is a PeerError in the words :mod:`app.net.association` uses for
pynetdicom's associations, so a technologist reads the same sentence whichever made it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from app.net import pdu
from app.net.association import CONNECT_TIMEOUT, RESPONSE_TIMEOUT
from app.net.errors import PeerError, TlsRequired
from app.net.inbound import MAX_PDU, Messages
from app.net.nodes import Node
from app.security.tls import client_context

# PS3.8 9.3.4: why an association was rejected (source, reason), as pynetdicom words it
_REJECTED = {(1, 2): "application context name not supported", (1, 3): "calling AE title not recognised",
             (1, 7): "called AE title not recognised", (2, 2): "protocol version not supported",
             (3, 1): "temporary congestion", (3, 2): "local limit exceeded"}


@dataclass(frozen=True)
class Proposal:
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    as_scp: bool = False  # we take this class's requests (a C-GET's C-STOREs) on it


def request(called: str, calling: str, proposals: Sequence[Proposal]) -> bytes:
    """An A-ASSOCIATE-RQ proposing each context (IDs 1, 3, 5...), asking the SCP role where wanted."""
    contexts = [pdu.ProposedContext(2 * number + 1, p.abstract_syntax, p.transfer_syntaxes)
                for number, p in enumerate(proposals)]
    roles = {p.abstract_syntax: (False, True) for p in proposals if p.as_scp}
    return pdu.associate_request(called, calling, contexts, roles, MAX_PDU, pdu.IMPLEMENTATION)


def _answer(body: bytes | bytearray,
            proposals: Sequence[Proposal]) -> tuple[dict[int, tuple[str, str]], int]:
    """The accepted contexts of an A-ASSOCIATE-AC (ID -> abstract and transfer syntax) and the most
    the acceptor takes in one PDU."""
    if len(body) < 68:
        raise pdu.ProtocolError("the association answer is too short")
    accepted, max_length = {}, 0
    for kind, value in pdu.items(bytes(body), 68):
        if kind == 0x21 and len(value) >= 4 and value[2] == pdu.ACCEPTED:
            number = (value[0] - 1) // 2
            syntaxes = [pdu.text(bytes(sub)) for k, sub in pdu.items(value, 4) if k == 0x40]
            if value[0] % 2 and number < len(proposals) and syntaxes:
                accepted[value[0]] = (proposals[number].abstract_syntax, syntaxes[0])
        elif kind == 0x50:
            for sub_kind, sub in pdu.items(value):
                if sub_kind == 0x51 and len(sub) == 4:
                    (max_length,) = struct.unpack(">I", sub)
    return accepted, max_length


def _connect(node: Node) -> socket.socket:
    sock = socket.create_connection((node.host, node.port), timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if node.tls is None:
        return sock
    try:
        return client_context(node.tls).wrap_socket(sock, server_hostname=node.server_name or node.host)
    except BaseException:
        sock.close()
        raise


def _why(exc: BaseException) -> tuple[str, bool]:
    """A failure to associate in words, and whether it may pass by itself (see :class:`PeerError`)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"it presented a certificate this workstation does not trust ({exc.verify_message})", False
    if isinstance(exc, ssl.SSLError):
        return "the secure connection failed (is TLS set up alike on both sides?)", False
    if isinstance(exc, ConnectionRefusedError):
        return "nothing is listening there (connection refused)", True
    if isinstance(exc, TimeoutError):
        return "it did not answer in time", True
    if isinstance(exc, pdu.ProtocolError):
        return f"it broke the DICOM protocol ({exc})", False
    return "it broke the connection off (does it expect TLS where none is set, or the reverse?)", True


@contextlib.contextmanager
def associated(node: Node, local_ae: str, proposals: Sequence[Proposal], *,
               max_data: int) -> Iterator[Messages]:
    """An established association with ``node`` (released afterwards), or a PeerError saying why
    not. A plain node the site requires TLS with is refused before anything leaves."""
    if node.tls is None and node.tls_required:
        raise TlsRequired(node.name)
    where = f"Could not reach the PACS node '{node.name}' ({node.ae_title} at {node.host}:{node.port})"
    try:
        channel = pdu.Channel(_connect(node))
    except OSError as exc:
        why, transient = _why(exc)
        raise PeerError(f"{where}: {why}.", transient=transient) from None
    with contextlib.closing(channel.sock):
        try:
            channel.send(request(node.ae_title, local_ae, proposals))
            kind, body = channel.read(pdu.MAX_REQUEST, RESPONSE_TIMEOUT)
        except (OSError, pdu.ProtocolError) as exc:
            why, transient = _why(exc)
            raise PeerError(f"{where}: {why}.", transient=transient) from None
        if kind == pdu.ASSOCIATE_RJ and len(body) == 4:
            words = _REJECTED.get((body[2], body[3]), "no reason given")
            raise PeerError(f"{where}: it refused the association ({words}).",
                            transient=body[1] == 2 or body[2] == 3)
        if kind != pdu.ASSOCIATE_AC:
            raise PeerError(f"{where}: {_why(ConnectionError())[0]}.", transient=True)
        contexts, max_length = _answer(body, proposals)
        if not contexts:
            raise PeerError(f"{where}: it accepts none of the services asked for.", transient=False)
        try:
            yield Messages(channel, contexts, max_data=max_data, max_send=max_length)
        except (OSError, pdu.ProtocolError) as exc:
            with contextlib.suppress(OSError):
                channel.send(pdu.ABORTED)
            raise PeerError(f"The PACS node '{node.name}' broke off the association: {_why(exc)[0]}.",
                            transient=True) from None
        except BaseException:
            with contextlib.suppress(OSError):
                channel.send(pdu.ABORTED)
            raise
        with contextlib.suppress(OSError, pdu.ProtocolError):
            channel.send(pdu.RELEASE_REQUEST)
            channel.read(MAX_PDU, RESPONSE_TIMEOUT)  # its A-RELEASE-RP (or whatever it says last)
