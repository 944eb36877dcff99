"""A received data set as a DICOM Part 10 file, in memory: preamble, file meta information, data set;
and a small data set (a query's answer, an event report) read as it came.

The file meta is written byte for byte as pynetdicom and pydicom wrote it for instances received
before (their implementation's UID and version name): the vault tells a resent instance from a
clashing one by the SHA-256 of these bytes, so a resend of an instance stored then stays a
duplicate rather than a conflict.
"""

from __future__ import annotations

import io
import re
import struct
from typing import cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dimse_primitives import C_STORE

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_PREAMBLE = bytes(128) + b"DICM"


def _element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def _uid(element: int, text: str) -> bytes:
    if len(text) > 64 or not _UID.fullmatch(text):
        raise ValueError("a UID of the request is not a valid UID")
    return _element(element, b"UI", text.encode("ascii"), b"\0")


def part10(sop_class: str, sop_instance: str, transfer_syntax: str, dataset: bytes) -> bytes:
    """``dataset`` (encoded in ``transfer_syntax``) as a Part 10 file naming the instance."""
    body = b"".join((
        struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\0\1",  # File Meta Information Version
        _uid(2, sop_class), _uid(3, sop_instance), _uid(0x10, transfer_syntax),
        _uid(0x12, PYNETDICOM_IMPLEMENTATION_UID),
        _element(0x13, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")))
    return b"".join((_PREAMBLE, struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)), body, dataset))


def of_store_event(event: evt.Event) -> bytes:
    """The data set of a C-STORE pynetdicom received (a C-GET's sub-operation) as a Part 10 file."""
    request = cast(C_STORE, event.request)  # (pynetdicom types it as any DIMSE request)
    if request.DataSet is None:
        raise ValueError("the C-STORE request carries no data set")
    return part10(str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID),
                  str(event.context.transfer_syntax), request.DataSet.getvalue())


def data_set(data: bytes, transfer_syntax: str) -> Dataset:
    """A data set that came in ``transfer_syntax`` (one of the uncompressed ones), read whole."""
    return read_dataset(io.BytesIO(data), transfer_syntax == ImplicitVRLittleEndian,
                        transfer_syntax != ExplicitVRBigEndian)
