"""The DICOM upper layer's protocol data units (PS3.8 section 9), as the storage SCP reads and writes them.

Only what an acceptor of storage needs: it reads A-ASSOCIATE-RQ, P-DATA-TF, A-RELEASE-RQ and
A-ABORT, and writes the answers. Every length is checked against what holds it before it is
trusted, so a malformed or hostile PDU is a :class:`ProtocolError` (answered with an A-ABORT),
never an over-read or an unbounded allocation.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
MAX_REQUEST = 256 * 1024  # an A-ASSOCIATE-RQ of 128 contexts, each with many transfer syntaxes, fits
IMPLEMENTATION = (PYDICOM_IMPLEMENTATION_UID, "CUSTODIAN")  # as our associations name us
_HEADER = struct.Struct(">BxI")
_ITEM = struct.Struct(">BxH")

# A-ASSOCIATE-RJ (result, source, reason) as PS3.8 9.3.4 numbers them
REJECT_NOT_ALLOWED = (1, 1, 3)  # permanent; service user: calling AE title not recognised
REJECT_CALLED_AE = (1, 1, 7)  # permanent; service user: called AE title not recognised
REJECT_CONTEXT = (1, 1, 2)  # permanent; service user: application context name not supported
REJECT_VERSION = (1, 2, 2)  # permanent; service provider (ACSE): protocol version not supported
REJECT_BUSY = (2, 3, 2)  # transient; service provider (presentation): local limit exceeded

# presentation context results
ACCEPTED, ABSTRACT_SYNTAX_REFUSED, TRANSFER_SYNTAX_REFUSED = 0, 3, 4


class ProtocolError(Exception):
    """A PDU that breaks the protocol: the association is aborted."""


@dataclass(frozen=True)
class ProposedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class AssociateRequest:
    called_ae: str
    calling_ae: str
    application_context: str = ""
    contexts: list[ProposedContext] = field(default_factory=list)
    max_length: int = 0  # the most the requestor takes in one P-DATA-TF (0: no limit)
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # SOP class -> (SCU, SCP) proposed
    version: int = 1  # the protocol versions it speaks, as bits (version 1 is bit 0)
    body: bytes = b""  # as received: the A-ASSOCIATE-AC echoes its reserved fields


@dataclass(frozen=True)
class Accepted:
    """One presentation context's outcome, as the A-ASSOCIATE-AC states it."""

    context_id: int
    result: int
    transfer_syntax: str


def text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \0")


def items(body: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, memoryview]]:
    """The (type, value) items of a variable field, each bounded by what holds it."""
    view = memoryview(body)
    at = start
    while at < len(view):
        if at + 4 > len(view):
            raise ProtocolError("an item's header runs past its PDU")
        kind, length = _ITEM.unpack_from(view, at)
        if at + 4 + length > len(view):
            raise ProtocolError("an item's length runs past its PDU")
        yield kind, view[at + 4:at + 4 + length]
        at += 4 + length


def parse_request(body: bytes) -> AssociateRequest:
    """An A-ASSOCIATE-RQ's variable field (after the PDU header)."""
    if len(body) < 68:
        raise ProtocolError("the association request is too short")
    (version,) = struct.unpack_from(">H", body)
    request = AssociateRequest(text(body[4:20]), text(body[20:36]), version=version, body=body)
    if not version & 1:
        return request  # (rejected: nothing else of it is read)
    for kind, value in items(body, 68):
        if kind == 0x10:
            request.application_context = text(bytes(value))
        elif kind == 0x20:
            request.contexts.append(_proposed(value))
        elif kind == 0x50:
            _user_information(value, request)
    return request


def _proposed(value: memoryview) -> ProposedContext:
    if len(value) < 4:
        raise ProtocolError("a presentation context item is too short")
    abstract, syntaxes = "", []
    for kind, sub in items(value, 4):
        if kind == 0x30:
            abstract = text(bytes(sub))
        elif kind == 0x40:
            syntaxes.append(text(bytes(sub)))
    return ProposedContext(value[0], abstract, tuple(syntaxes))


def _user_information(value: memoryview, request: AssociateRequest) -> None:
    for kind, sub in items(value):
        if kind == 0x51 and len(sub) == 4:
            (request.max_length,) = struct.unpack(">I", sub)
        elif kind == 0x54 and len(sub) >= 2:
            (size,) = struct.unpack_from(">H", sub)
            if len(sub) != 2 + size + 2:
                raise ProtocolError("a role selection item is malformed")
            request.roles[text(bytes(sub[2:2 + size]))] = (bool(sub[2 + size]), bool(sub[3 + size]))


def _item(kind: int, value: bytes) -> bytes:
    return _ITEM.pack(kind, len(value)) + value


def _uid(text: str) -> bytes:
    return text.encode("ascii")


def _pdu(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(kind, len(body)) + body


def _user_items(max_length: int, roles: dict[str, tuple[bool, bool]],
                implementation: tuple[str, str]) -> bytes:
    """The user information item both association PDUs end with: the most we take in one PDU, who
    we are, and the SCU/SCP roles (proposed, or answered)."""
    user = [_item(0x51, struct.pack(">I", max_length)), _item(0x52, _uid(implementation[0]))]
    for sop_class, (scu, scp) in roles.items():
        uid = _uid(sop_class)
        user.append(_item(0x54, struct.pack(">H", len(uid)) + uid + bytes((scu, scp))))
    user.append(_item(0x55, implementation[1].encode("ascii")))
    return _item(0x50, b"".join(user))


def associate_request(called: str, calling: str, contexts: list[ProposedContext],
                      roles: dict[str, tuple[bool, bool]], max_length: int,
                      implementation: tuple[str, str]) -> bytes:
    """An A-ASSOCIATE-RQ proposing ``contexts``, with role selection for ``roles``."""
    items = [_item(0x10, _uid(APPLICATION_CONTEXT))]
    for c in contexts:
        syntaxes = b"".join(_item(0x40, _uid(ts)) for ts in c.transfer_syntaxes)
        proposed = _item(0x30, _uid(c.abstract_syntax)) + syntaxes
        items.append(_item(0x20, bytes((c.context_id, 0, 0, 0)) + proposed))
    fixed = struct.pack(">H2x16s16s32x", 1, called.encode().ljust(16), calling.encode().ljust(16))
    return _pdu(ASSOCIATE_RQ, fixed + b"".join(items) + _user_items(max_length, roles, implementation))


def accept(request: AssociateRequest, contexts: list[Accepted], roles: dict[str, tuple[bool, bool]],
           max_length: int, implementation: tuple[str, str]) -> bytes:
    """The A-ASSOCIATE-AC: the request's fixed fields echoed, each context's outcome, our limits."""
    items = [_item(0x10, _uid(APPLICATION_CONTEXT))]
    for c in contexts:
        syntax = _item(0x40, _uid(c.transfer_syntax))
        items.append(_item(0x21, bytes((c.context_id, 0, c.result, 0)) + syntax))
    return _pdu(ASSOCIATE_AC, request.body[:68] + b"".join(items) +
                _user_items(max_length, roles, implementation))


def reject(why: tuple[int, int, int]) -> bytes:
    return _pdu(ASSOCIATE_RJ, bytes((0, *why)))


RELEASE_REQUEST = _pdu(RELEASE_RQ, bytes(4))
RELEASE_REPLY = _pdu(RELEASE_RP, bytes(4))
ABORTED = _pdu(ABORT, bytes(4))  # source: service user, no reason given


def p_data(context_id: int, message: bytes, *, command: bool, max_length: int) -> list[bytes]:
    """A command or a data set as P-DATA-TF PDUs, each within the peer's maximum length."""
    room = (max_length or 1 << 24) - 6  # less the PDV item's own header
    flags = 0x01 if command else 0x00
    pdus = []
    for at in range(0, max(len(message), 1), room):
        chunk = message[at:at + room]
        last = 0x02 if at + room >= len(message) else 0
        pdus.append(_pdu(P_DATA, struct.pack(">IBB", len(chunk) + 2, context_id, flags | last) + chunk))
    return pdus


def pdvs(body: bytes | bytearray) -> Iterator[tuple[int, int, memoryview]]:
    """A P-DATA-TF's presentation data values: (context ID, control header, fragment)."""
    view, at = memoryview(body), 0
    while at < len(view):
        if at + 6 > len(view):
            raise ProtocolError("a presentation data value's header runs past its PDU")
        (length,) = struct.unpack_from(">I", view, at)
        if length < 2 or at + 4 + length > len(view):
            raise ProtocolError("a presentation data value's length does not fit its PDU")
        yield view[at + 4], view[at + 5], view[at + 6:at + 4 + length]
        at += 4 + length


class Channel:
    """One connection's PDUs, read whole within a bound and a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._header = bytearray(6)

    def read(self, limit: int, wait: float) -> tuple[int, bytearray]:
        """The next PDU (type, variable field), at most ``limit`` bytes long; ``wait``: seconds the
        whole PDU may take to arrive. A closed connection or a timeout is an OSError."""
        deadline = time.monotonic() + wait
        self._fill(memoryview(self._header), deadline)
        kind, length = _HEADER.unpack(self._header)
        if kind not in range(1, 8):
            raise ProtocolError(f"an unknown PDU type ({kind})")
        if length > limit:
            raise ProtocolError(f"a PDU of {length} bytes, more than the {limit} agreed")
        body = bytearray(length)
        self._fill(memoryview(body), deadline)
        return kind, body

    def _fill(self, view: memoryview, deadline: float) -> None:
        while len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the peer took too long to send a PDU")
            self.sock.settimeout(left)
            got = self.sock.recv_into(view)
            if not got:
                raise ConnectionError("the peer closed the connection")
            view = view[got:]

    def send(self, *pdus: bytes) -> None:
        self.sock.sendall(b"".join(pdus))
