"""Associations that wake as soon as there is work, where pynetdicom polls.

pynetdicom's association thread sleeps 1 ms between looks for a decoded message, and its DUL thread
1 ms between looks at the socket and at what it has to send. Each C-STORE crosses both: on a loaded
two-core machine every such sleep overshoots, and the waits came to a third of a received image's
time. Here the association thread waits on its message queue and the DUL thread in ``select`` on
its socket, each for at most WAIT seconds, so a message or a PDU is taken as it arrives; what the
DUL sends (a C-STORE response) still waits for its next turn, at most WAIT. The storage SCP's
associations and a C-GET's (whose sub-operations are C-STOREs to us) are made so.
"""

from __future__ import annotations

import queue
import select
import ssl
import time
from typing import cast

from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler

WAIT = 0.0005  # seconds: the DUL's longest nap, so also the longest a response waits to be sent
MESSAGE_WAIT = 0.005  # seconds the association thread waits for a message before its other checks


class _WaitingSocket(AssociationSocket):
    @property
    def ready(self) -> bool:
        """Whether data can be read, waiting up to WAIT for it (pynetdicom's own looks once)."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            time.sleep(WAIT)  # (the DUL thread looks again at once: no spinning while it closes)
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], WAIT)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # the transport connection closed
            return False
        return bool(readable)


def _waiting_get(dimse: DIMSEServiceProvider) -> None:
    """The association thread's look for a message waits up to MESSAGE_WAIT instead of not at all."""
    def get_msg(block: bool = False) -> tuple[int | None, object]:
        try:
            return cast(tuple[int | None, object], dimse.msg_queue.get(
                timeout=dimse.dimse_timeout if block else MESSAGE_WAIT))
        except queue.Empty:
            return None, None
    dimse.get_msg = get_msg  # type: ignore[method-assign,assignment]


def prompt(assoc: Association) -> Association:
    """``assoc`` made prompt: its DUL waits in ``select`` and its reactor on its message queue."""
    assoc.dul._run_loop_delay = 0  # (its nap is the wait in ``ready``)
    if assoc.dul.socket is not None:
        assoc.dul.socket.__class__ = _WaitingSocket
    _waiting_get(assoc.dimse)
    return assoc


class PromptHandler(RequestHandler):
    """pynetdicom's request handler, its associations made prompt (a server's ``request_handler``)."""

    def _create_association(self) -> Association:
        return prompt(super()._create_association())
