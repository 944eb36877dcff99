"""Associations with DICOM peers (pynetdicom), and what went wrong in words a technologist can act on.

pynetdicom reports a failed association by logging, not by raising, so each attempt collects its
log lines and turns them into one sentence: nothing listening, the peer refusing our AE title or
its own, an untrusted certificate. Every association made here uses TLS when the node has it, and
none is made with a plain node when the site requires TLS.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, Association, evt
from pynetdicom import sop_class as _sop_classes
from pynetdicom.sop_class import SOPClass

from app.net.errors import PeerError, TlsRequired
from app.net.nodes import Node
from app.security.tls import client_context

CONNECT_TIMEOUT = 10.0
UNEXPLAINED = "the connection failed"
RESPONSE_TIMEOUT = 30.0


def named_sop_class(keyword: str) -> SOPClass:
    """pynetdicom's SOP class of this keyword (``"Verification"``). pynetdicom makes its SOP classes
    when it is imported, writing them into its module's globals(), so no type checker knows them by
    name; this is the same object as ``pynetdicom.sop_class.<keyword>``."""
    return cast(SOPClass, getattr(_sop_classes, keyword))


Verification = named_sop_class("Verification")


@dataclass(frozen=True)
class EchoResult:
    node: str
    ok: bool
    ms: float


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _peer_log() -> Iterator[_Collected]:
    collected = _Collected()
    logger = logging.getLogger("pynetdicom")
    logger.addHandler(collected)
    try:
        yield collected
    finally:
        logger.removeHandler(collected)


def _why(lines: Sequence[str]) -> tuple[str, bool]:
    """The reason in words, and whether it may pass by itself (see :class:`PeerError`)."""
    text = " ".join(lines)
    if reason := re.search(r"Reason: (.+?)(?:$| Association)", text):
        words = reason.group(1).strip()
        congested = "congestion" in words or "limit exceeded" in words
        return f"it refused the association ({words[:1].lower()}{words[1:]})", congested
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        detail = re.search(r"certificate verify failed: ([^(]+)", text)
        return ("it presented a certificate this workstation does not trust"
                + (f" ({detail.group(1).strip()})" if detail else "")), False
    if "Connection refused" in text:
        return "nothing is listening there (connection refused)", True
    if "timed out" in text or "TimeoutError" in text:
        return "it did not answer in time", True
    if "SSL" in text or "TLS" in text:
        return "the secure connection failed (is TLS set up alike on both sides?)", False
    if "No accepted presentation contexts" in text:
        return "it accepts none of the services asked for", False
    if "Aborted" in text or "reset by peer" in text:
        return "it broke the connection off (does it expect TLS where none is set, or the reverse?)", True
    return UNEXPLAINED, True


def _no_delay(event: evt.Event) -> None:
    """Small DIMSE responses must leave at once: with Nagle's algorithm each one can wait ~40 ms
    for the peer's delayed acknowledgement."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NO_DELAY = (evt.EVT_CONN_OPEN, _no_delay)


def application_entity(local_ae: str) -> AE:
    ae = AE(ae_title=local_ae)
    ae.acse_timeout = RESPONSE_TIMEOUT
    ae.dimse_timeout = RESPONSE_TIMEOUT
    ae.network_timeout = RESPONSE_TIMEOUT
    ae.connection_timeout = CONNECT_TIMEOUT
    return ae


@contextlib.contextmanager
def associated(node: Node, ae: AE, **options: Any) -> Iterator[Association]:
    """An established association with ``node`` (released afterwards), or a PeerError saying why
    not; ``options`` go to pynetdicom's ``associate`` (role negotiation, event handlers). A plain
    node the site requires TLS with is refused before anything leaves."""
    if node.tls is None and node.tls_required:
        raise TlsRequired(node.name)
    tls_args = None
    if node.tls is not None:
        tls_args = (client_context(node.tls), node.server_name or node.host)
    handlers = [NO_DELAY, *options.pop("evt_handlers", [])]
    for attempt in range(2):
        with _peer_log() as log:
            assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls_args,
                                 evt_handlers=handlers, **options)
        why, transient = _why(log.lines)
        # A peer that rejects and hangs up at once can close the line before pynetdicom has read
        # the rejection (a busy machine): nothing to say why. Asking once more gets the reason.
        if assoc.is_established or why != UNEXPLAINED or attempt:
            break
    if not assoc.is_established:
        raise PeerError(f"Could not reach the PACS node '{node.name}' ({node.ae_title} at "
                        f"{node.host}:{node.port}): {why}.", transient=transient)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(node: Node, local_ae: str) -> EchoResult:
    """C-ECHO: is the node there, does it accept us, and how long does a round trip take."""
    ae = application_entity(local_ae)
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    with associated(node, ae) as assoc:
        status = assoc.send_c_echo()
    ms = (time.perf_counter() - started) * 1000
    if not status or status.Status != 0x0000:
        raise PeerError(f"The PACS node '{node.name}' answered the echo with a failure status.")
    return EchoResult(node.name, True, round(ms, 1))
