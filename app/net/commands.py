"""DIMSE command sets (PS3.7 section 9.3 and annex E): group 0000 in Implicit VR Little Endian.

A command set is a handful of short elements, so it is read into a plain mapping and written from
one: no data set machinery on the path every received instance takes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from app.net.pdu import ProtocolError

MAX_COMMAND = 64 * 1024  # far more than any command set holds

GROUP_LENGTH = 0x0000_0000
AFFECTED_SOP_CLASS = 0x0000_0002
COMMAND_FIELD = 0x0000_0100
MESSAGE_ID = 0x0000_0110
PRIORITY = 0x0000_0700
RESPONDING_TO = 0x0000_0120
DATA_SET_TYPE = 0x0000_0800
STATUS = 0x0000_0900
AFFECTED_SOP_INSTANCE = 0x0000_1000
EVENT_TYPE = 0x0000_1002
MOVE_ORIGINATOR_AE = 0x0000_1030
MOVE_ORIGINATOR_ID = 0x0000_1031
REMAINING, COMPLETED, FAILED, WARNED = 0x0000_1020, 0x0000_1021, 0x0000_1022, 0x0000_1023

NO_DATA_SET = 0x0101
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP = 0x0100, 0x8100
RESPONSE = 0x8000  # the bit every response's command field has

_ELEMENT = struct.Struct("<HHI")
_US = {COMMAND_FIELD, MESSAGE_ID, RESPONDING_TO, PRIORITY, DATA_SET_TYPE, STATUS, EVENT_TYPE,
       MOVE_ORIGINATOR_ID, REMAINING, COMPLETED, FAILED, WARNED}


class Command(dict[int, bytes]):
    """A received command set: each element's raw value by tag."""

    def number(self, tag: int) -> int | None:
        raw = self.get(tag)
        if raw is None:
            return None
        if len(raw) != 2:
            raise ProtocolError("a command element has the wrong length")
        return int.from_bytes(raw, "little")

    def text(self, tag: int) -> str:
        return self.get(tag, b"").decode("ascii", "replace").strip(" \0")

    @property
    def field(self) -> int:
        field = self.number(COMMAND_FIELD)
        if field is None:
            raise ProtocolError("a command set without its command field")
        return field

    @property
    def has_data(self) -> bool:
        return self.number(DATA_SET_TYPE) != NO_DATA_SET


def read(raw: bytes | bytearray | memoryview) -> Command:
    """A command set's elements; a length past the end is a ProtocolError."""
    found, at = Command(), 0
    while at < len(raw):
        if at + 8 > len(raw):
            raise ProtocolError("a command element's header runs past its command set")
        group, element, length = _ELEMENT.unpack_from(raw, at)
        if at + 8 + length > len(raw):
            raise ProtocolError("a command element's length runs past its command set")
        if group != 0:
            raise ProtocolError("a command set holds an element outside group 0000")
        found[element] = bytes(raw[at + 8:at + 8 + length])
        at += 8 + length
    return found


def _value(tag: int, value: int | str) -> bytes:
    if tag in _US:
        return struct.pack("<H", int(value))
    raw = str(value).encode("ascii")
    return raw + (b"\0" if len(raw) % 2 else b"")  # UIDs pad with a NUL (AE titles: none here are odd)


def write(elements: Mapping[int, int | str]) -> bytes:
    """A command set of these elements (tags of group 0000), its group length first."""
    body = b"".join(_ELEMENT.pack(0, tag, len(v)) + v
                    for tag, v in sorted((t, _value(t, value)) for t, value in elements.items()))
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<I", len(body)) + body


def response(request: Command, field: int, status: int) -> bytes:
    """The response to ``request`` (which carries no data set), naming what the request named."""
    elements: dict[int, int | str] = {COMMAND_FIELD: field, RESPONDING_TO: request.number(MESSAGE_ID) or 0,
                                      DATA_SET_TYPE: NO_DATA_SET, STATUS: status}
    for tag in (AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, EVENT_TYPE):
        if tag in request:
            elements[tag] = request.number(tag) or 0 if tag == EVENT_TYPE else request.text(tag)
    return write(elements)
