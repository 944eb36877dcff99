"""Prompt associations (app/net/prompt.py): they serve as pynetdicom's do, without spinning while idle."""

from __future__ import annotations

import resource
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from app.net.prompt import PromptHandler


@pytest.fixture
def server() -> Iterator[ThreadedAssociationServer]:
    ae = AE(ae_title="PROMPT")
    ae.add_supported_context(Verification)
    served = ae.make_server(("127.0.0.1", 0), server_class=ThreadedAssociationServer,
                            request_handler=PromptHandler,
                            evt_handlers=[(evt.EVT_C_ECHO, lambda event: 0x0000)])
    threading.Thread(target=served.serve_forever, args=(0.05,), daemon=True).start()
    yield served
    socketserver.BaseServer.shutdown(served)  # (pynetdicom's own also unlists it from an AE's servers)
    served.server_close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_an_idle_association_waits_without_spinning(server: ThreadedAssociationServer) -> None:
    ae = AE(ae_title="CALLER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="PROMPT")
    assert assoc.is_established
    try:
        assert all(assoc.send_c_echo().Status == 0x0000 for _ in range(20))
        (served,) = server.active_associations
        assert served.dul._run_loop_delay == 0  # (the handler is in use: its waits are in select)
        before, started = _cpu(), time.monotonic()
        time.sleep(0.5)  # both ends idle: a DUL looking at its socket without waiting would spin a core
        used = _cpu() - before
        assert used < 0.2 * (time.monotonic() - started), used
        assert assoc.send_c_echo().Status == 0x0000  # and it still answers at once
    finally:
        assoc.release()
