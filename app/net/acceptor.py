"""The storage SCP's door: connections accepted, admitted within bounds, each served on its own thread.

A flood of connections is closed at the door: bounded threads and memory, and one address cannot
take the places of the others (a modality keeps sending while another address floods). A TLS
handshake is made on the connection's own thread, within the associate wait, so a connection that
never speaks holds up nobody else.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable

from app.net.refusals import Refusal

MAX_CONNECTIONS = 64  # open at once, associated or not
MAX_PER_PEER = 8  # from one address
ASSOCIATE_WAIT = 10.0  # seconds a new connection has to make its TLS handshake and ask for an association
STOP_POLL = 0.05  # seconds between the acceptor's checks for a stop
STOP_WAIT = 10.0  # seconds a stop waits for the connections it hung up on to finish

log = logging.getLogger(__name__)
Serve = Callable[[socket.socket, str], None]


class Acceptor:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, serve: Serve,
                 refused: Callable[[Refusal], None]) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._tls = tls
        self._serve = serve
        self._refused = refused
        self._open: dict[threading.Thread, tuple[str, socket.socket]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="scp-acceptor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], STOP_POLL)
            if not readable:
                continue
            try:
                sock, address = self._listener.accept()
            except OSError:
                continue
            peer = str(address[0])
            with self._lock:
                crowded = len(self._open) >= MAX_CONNECTIONS or \
                    sum(1 for a, _ in self._open.values() if a == peer) >= MAX_PER_PEER
                if not crowded:
                    thread = threading.Thread(target=self._connection, args=(sock, peer),
                                              name=f"scp-{peer}", daemon=True)
                    self._open[thread] = (peer, sock)
                    thread.start()
            if crowded:
                sock.close()

    def _connection(self, sock: socket.socket, peer: str) -> None:
        me = threading.current_thread()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each response leaves at once
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                with self._lock:
                    self._open[me] = (peer, sock)
                if not self._handshake(sock, peer):
                    return
            self._serve(sock, peer)
        except OSError:
            pass  # the peer went away, or the SCP stopped
        except Exception as exc:  # (its type only: a message might quote what the peer sent)
            log.error("a connection from %s ended on an error (%s)", peer, type(exc).__name__)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._open.pop(me, None)

    def _handshake(self, sock: ssl.SSLSocket, peer: str) -> bool:
        """The TLS handshake, within ASSOCIATE_WAIT; a peer that fails it (plain DICOM, a certificate
        from another CA, none) is reported; one that only hung up or kept silent is not."""
        sock.settimeout(ASSOCIATE_WAIT)
        try:
            sock.do_handshake()
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return False
        except ssl.SSLError as exc:
            self._refused(Refusal("", peer, f"the TLS handshake failed ({_handshake_why(exc)})"))
            return False
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Stop listening, hang up on every connection, and wait (a while) for their threads."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._listener.close()
        with self._lock:
            still = dict(self._open)
        for _, sock in still.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in still:
            thread.join(STOP_WAIT)


def _handshake_why(exc: ssl.SSLError) -> str:
    reason = str(exc.reason or exc).lower().replace("_", " ")
    if "certificate" in reason and ("verify" in reason or "unknown ca" in reason):
        return "its certificate is not from a CA this station trusts"
    if "no certificate" in reason or "did not return a certificate" in reason:
        return "it presented no certificate"
    if "wrong version" in reason or "http" in reason or "unknown protocol" in reason:
        return "it did not speak TLS: a plain connection"
    return reason
