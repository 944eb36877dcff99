"""Audit records as RFC 5424 syslog messages, framed for TLS transport (RFC 5425).

IHE ATNA (ITI-20) sends each DICOM audit message as the MSG of a syslog message with facility
authpriv, severity notice and MSGID ``IHE+RFC-3881``. The structured data carries the record's
place in the local hash chain, so the central repository (and ``audit reconcile``) can tell a
duplicate after a reconnect from an altered record, and see a gap. Signed chain heads travel as
messages of their own, so a repository can notice a workstation whose tail was cut.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

PRI = 10 * 8 + 5  # authpriv.notice
APP_NAME = "custodian"
EVENT_MSGID = "IHE+RFC-3881"
CHECKPOINT_MSGID = "CUSTODIAN-CHECKPOINT"
SD_EVENT = "chain@32473"  # 32473: the example enterprise number of RFC 5612 until one is assigned
SD_CHECKPOINT = "checkpoint@32473"
BOM = "\ufeff"


@dataclass(frozen=True)
class ChainEntry:
    """One record as the repository receives it: its place in the chain and its message."""

    seq: int
    at: str
    prev_hash: str
    hash: str
    message: str


@dataclass(frozen=True)
class SignedHead:
    seq: int
    head_hash: str
    at: str
    signature: bytes


def _header(host: str, at: str, msgid: str) -> str:
    return f"<{PRI}>1 {at} {host} {APP_NAME} - {msgid}"


def event_message(entry: ChainEntry, host: str) -> bytes:
    sd = (f'[{SD_EVENT} seq="{entry.seq}" prev="{entry.prev_hash}" hash="{entry.hash}"]')
    return f"{_header(host, entry.at, EVENT_MSGID)} {sd} {BOM}{entry.message}".encode()


def checkpoint_message(head: SignedHead, host: str, key_id: str) -> bytes:
    signature = base64.b64encode(head.signature).decode()
    sd = (f'[{SD_CHECKPOINT} seq="{head.seq}" head="{head.head_hash}" at="{head.at}" '
          f'key="{key_id}" sig="{signature}"]')
    return f"{_header(host, head.at, CHECKPOINT_MSGID)} {sd} -".encode()


def frame(message: bytes) -> bytes:
    """RFC 5425 octet counting: the length, a space, the message."""
    return b"%d %s" % (len(message), message)


# ---------------------------------------------------------------------------- reading back
_LINE = re.compile(r"^<\d{1,3}>1 (?P<at>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
                   r"(?P<msgid>\S+) (?P<sd>-|(?:\[[^\]]*\])+) ?(?P<msg>.*)$", re.S)
_SD_ELEMENT = re.compile(r"\[(?P<id>[^\s\]]+)(?P<params>[^\]]*)\]")
_SD_PARAM = re.compile(r'(\S+?)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Received:
    host: str
    app: str
    msgid: str
    params: dict[str, dict[str, str]]
    msg: str


def parse(line: str) -> Received | None:
    """One RFC 5424 message as a repository stored it (one per line); None when it is not one."""
    match = _LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    params = {m["id"]: dict(_SD_PARAM.findall(m["params"]))
              for m in _SD_ELEMENT.finditer(match["sd"])} if match["sd"] != "-" else {}
    return Received(match["host"], match["app"], match["msgid"], params, match["msg"].removeprefix(BOM))


def as_entry(received: Received) -> ChainEntry | None:
    chain = received.params.get(SD_EVENT)
    if received.msgid != EVENT_MSGID or chain is None:
        return None
    try:
        return ChainEntry(int(chain["seq"]), "", chain["prev"], chain["hash"], received.msg)
    except (KeyError, ValueError):
        return None


def as_head(received: Received) -> SignedHead | None:
    head = received.params.get(SD_CHECKPOINT)
    if received.msgid != CHECKPOINT_MSGID or head is None:
        return None
    try:
        return SignedHead(int(head["seq"]), head["head"], head["at"],
                          base64.b64decode(head["sig"], validate=True))
    except (KeyError, ValueError):
        return None
