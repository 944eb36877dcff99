"""The storage SCP: instances sent by the PACS (C-MOVE results) and modalities go into the vault.

Each C-STORE is answered only once its instance is durably in the vault, so a sender never
deletes or forgets something we might lose. Instances arriving on all associations at once are
imported together (one commit for many), and each handler waits for its own outcome. Only the
configured PACS nodes may send, each from its own address or with its own certificate
(:mod:`app.net.admission`), and only to our own AE title; a refusal is an A-ASSOCIATE-RJ, reported.

It takes what an import takes: every storage SOP class (retired ones too: old modalities and
archives still send them) in every transfer syntax the viewer can display, kept exactly as sent.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import socketserver
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom import uid
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, AllStoragePresentationContexts, evt, register_uid
from pynetdicom import sop_class as sop
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.transport import ThreadedAssociationServer

from app.background import GroupCommit
from app.errors import UsageError
from app.net.admission import Admission, Peer, address_of
from app.net.association import NO_DELAY, application_entity, named_sop_class
from app.net.commitment import Reports, report_handler
from app.net.prompt import PromptHandler
from app.net.refusals import Refusal, RefusalDigest
from app.store.limits import DEFAULT_LIMITS, Budgets, IntakeLimits, OverLimit
from app.store.records import ImportReport

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # could not be stored (disk full, vault busy): the sender may retry
CANNOT_UNDERSTAND = 0xC000  # refused: unparseable, or in conflict with what is stored

Store = Callable[[str, list[tuple[str, bytes]]], ImportReport]
Refused = Callable[[Refusal], None]

# Uncompressed first, so a sender offering its data both ways never compresses it for us; Explicit VR
# Little Endian before Implicit, which loses the VRs of private elements.
UNCOMPRESSED = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian)
# Lossless before lossy for the same reason. A sender holding compressed data offers its own syntax
# on a context of its own (as DCMTK and Orthanc do), and it is kept as sent: nothing is transcoded.
COMPRESSED = (
    uid.DeflatedExplicitVRLittleEndian, uid.JPEG2000Lossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless,
    uid.RLELossless, uid.JPEGLossless, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL,
    uid.JPEG2000, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLSNearLossless, uid.HTJ2K,
)
TRANSFER_SYNTAXES = (*UNCOMPRESSED, *COMPRESSED)
# Not instances the vault files: storage commitment is a service, a DICOMDIR lists files, and
# non-patient objects (hanging protocols, colour palettes, implant templates, protocols, inventories)
# have no study to file them under; the vault would only quarantine them.
_NOT_FOR_THE_VAULT: set[str] = {
    # storage commitment (push, pull)
    named_sop_class("StorageCommitmentPushModel"), "1.2.840.10008.1.20.2",
    uid.MediaStorageDirectoryStorage, *map(named_sop_class, (
        "HangingProtocolStorage", "ColorPaletteStorage", "GenericImplantTemplateStorage",
        "ImplantAssemblyTemplateStorage", "ImplantTemplateGroupStorage", "CTDefinedProcedureProtocolStorage",
        "XADefinedProcedureProtocolStorage", "ProtocolApprovalStorage", "InventoryStorage")),
}


def _storage_classes() -> tuple[str, ...]:
    """pynetdicom's storage classes and every other (mostly retired) one pydicom's dictionary names;
    those are registered with pynetdicom's storage service, which otherwise aborts the association
    on their C-STOREs (here, and on a C-GET's association)."""
    # (each of these contexts has its abstract syntax: pynetdicom types it as optional)
    known: set[str] = {context.abstract_syntax for context in AllStoragePresentationContexts
                       if context.abstract_syntax is not None}
    for number, (name, kind, _, _, keyword) in uid.UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or number in known | _NOT_FOR_THE_VAULT:
            continue
        if sop.uid_to_service_class(number) is ServiceClass and not hasattr(sop, keyword):
            register_uid(number, keyword, StorageServiceClass)
            known.add(number)
    return tuple(sorted(known - _NOT_FOR_THE_VAULT))


STORAGE_CLASSES = _storage_classes()

Move = tuple[str, int]  # a C-MOVE a C-STORE answers: the move originator's AE title and message ID


@dataclass
class MoveTally:
    """What this process's storage SCP stored for one C-MOVE: the PACS counts only what it sent."""

    pacs_ae: str
    arrived: int = 0
    imported: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)

    def add(self, report: ImportReport) -> None:
        self.arrived += report.imported + report.duplicates + len(report.rejected)
        self.imported += report.imported
        self.duplicates += report.duplicates
        self.refused += [r.reason for r in report.rejected]


_tallies: dict[Move, MoveTally] = {}
_tallies_lock = threading.Lock()
_move_ids = itertools.count(1)


@contextlib.contextmanager
def tallying(local_ae: str, pacs_ae: str) -> Iterator[tuple[int, MoveTally]]:
    """A message ID for a C-MOVE and the tally of what arrives for it, while it runs."""
    with _tallies_lock:
        message_id = next(_move_ids) % 0xFFFF + 1
        key = (local_ae.strip(), message_id)
        tally = _tallies[key] = MoveTally(pacs_ae.strip())
    try:
        yield message_id, tally
    finally:
        with _tallies_lock:
            _tallies.pop(key, None)


def _tally(calling_ae: str, move: Move | None) -> MoveTally | None:
    """The running C-MOVE an arrival belongs to: by its move originator; a PACS that does not name
    the originator is matched by its AE title when only one move from it runs."""
    with _tallies_lock:
        if move is not None:
            return _tallies.get(move)
        candidates = [t for t in _tallies.values() if t.pacs_ae == calling_ae.strip()]
        return candidates[0] if len(candidates) == 1 else None


@dataclass
class _Arrival:
    calling_ae: str
    label: str
    data: bytes
    move: Move | None = None
    status: int = OUT_OF_RESOURCES  # until its batch is stored


class Receiver:
    """Instances arriving on all associations at once, stored together (one group commit)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._labels = itertools.count(1)
        self._commits = GroupCommit(self._store_all)

    def receive(self, calling_ae: str, data: bytes, move: Move | None = None) -> _Arrival:
        arrival = _Arrival(calling_ae, f"{calling_ae}#{next(self._labels)}", data, move)
        self._commits.submit(arrival)
        return arrival

    def _store_all(self, batch: list[_Arrival]) -> None:
        try:
            # One store per sender and C-MOVE, so each move's tally gets its own counts.
            for ae, move in sorted({(a.calling_ae, a.move) for a in batch}, key=str):
                mine = [a for a in batch if (a.calling_ae, a.move) == (ae, move)]
                report = self.store(ae, [(a.label, a.data) for a in mine])
                if (tally := _tally(ae, move)) is not None:
                    with _tallies_lock:
                        tally.add(report)
                refused = {r.path for r in report.rejected}
                for a in mine:
                    a.status = CANNOT_UNDERSTAND if a.label in refused else SUCCESS
        except Exception:  # a vault failure: the rest keep OUT_OF_RESOURCES, which senders retry
            pass


def _store_request(event: evt.Event) -> C_STORE:
    """The request of an EVT_C_STORE event (pynetdicom types it as any DIMSE request)."""
    return cast(C_STORE, event.request)


def part10(event: evt.Event) -> bytes:
    """The received C-STORE's data set as a Part 10 file, in memory: preamble, file meta, data set."""
    dataset = _store_request(event).DataSet
    if dataset is None:
        raise ValueError("the C-STORE request carries no data set")
    buffer = DicomBytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, event.file_meta, enforce_standard=True)
    buffer.write(dataset.getvalue())
    return buffer.getvalue()


# A flood of connections is closed at the door: bounded threads and memory, and one peer cannot
# take the places of the others (a modality keeps sending while another address floods).
MAX_CONNECTIONS = 64  # open at once, associated or not
MAX_PER_PEER = 8  # from one address
ASSOCIATE_WAIT = 10.0  # seconds a new connection has to ask for an association (the ARTIM timer)
STOP_POLL = 0.05  # seconds between the acceptor's checks for a stop


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server, checking for a stop every STOP_POLL seconds rather than
    socketserver's 0.5 s: the SCP started for a C-MOVE retrieve is stopped at its end, which
    waited 0.2-0.5 s for nothing. The TLS handshake is made on the connection's own thread."""

    refused: Refused  # told of each failed handshake (set before it serves)

    def serve_forever(self, poll_interval: float = STOP_POLL) -> None:
        super().serve_forever(poll_interval)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """A new connection, its TLS handshake not made yet: pynetdicom makes it here, on the one
        acceptor thread, where a connection that never speaks held every other sender up."""
        sock, address = cast(socket.socket, self.socket).accept()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket) and not self._handshake(request, str(client_address[0])):
            self.shutdown_request(request)
            return
        super().finish_request(request, client_address)

    def _handshake(self, sock: ssl.SSLSocket, address: str) -> bool:
        """The TLS handshake, within ASSOCIATE_WAIT; a peer that fails it (plain DICOM, a certificate
        from another CA, none) is reported; one that only hung up or kept silent is not."""
        waited = sock.gettimeout()
        sock.settimeout(ASSOCIATE_WAIT)
        try:
            sock.do_handshake()
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return False
        except ssl.SSLError as exc:
            self.refused(Refusal("", address, f"the TLS handshake failed ({_handshake_why(exc)})"))
            return False
        except OSError:
            return False
        sock.settimeout(waited)
        return True

    def shutdown(self) -> None:
        # pynetdicom's own shutdown also unlists the server from its AE, where only AE.start_server
        # (not used here, it fixes the poll interval) lists it
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _handshake_why(exc: ssl.SSLError) -> str:
    reason = str(exc.reason or exc).lower().replace("_", " ")
    if "certificate" in reason and ("verify" in reason or "unknown ca" in reason):
        return "its certificate is not from a CA this station trusts"
    if "no certificate" in reason or "did not return a certificate" in reason:
        return "it presented no certificate"
    if "wrong version" in reason or "http" in reason or "unknown protocol" in reason:
        return "it did not speak TLS: a plain connection"
    return reason


class StorageScp:
    def __init__(self, store: Store, *, ae_title: str, port: int, admission: Admission,
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 on_stop: Callable[[], None] | None = None, reports: Reports | None = None,
                 refused: Refused | None = None, limits: IntakeLimits = DEFAULT_LIMITS) -> None:
        if not admission.ae_titles:
            raise UsageError("No PACS nodes are set, so nobody would be allowed to send: add the "
                             "senders with 'custodian node add' first.")
        if (listening := address_of(host)) is None:
            raise UsageError(f"The storage SCP listens on an IP address of this station (0.0.0.0 for "
                             f"every interface), not '{host}'.")
        self.receiver = Receiver(store)
        self.port = port
        self.host = host
        self.local_only = listening.is_loopback  # only this machine can reach it
        self.secure = tls is not None
        self._admission = admission
        self._ae = self._make_ae(ae_title, admission.ae_titles)
        self._tls = tls
        self._on_stop = on_stop
        self._reports = reports
        self._refused = RefusalDigest(refused or (lambda refusal: None))  # a flood: counted, not listed
        self._budgets = Budgets(limits)  # what each association may send (the site's intake limits)
        self._server: ThreadedAssociationServer | None = None
        self._stopping = threading.Event()
        # Connections admitted whose association thread is not running yet (by their socket): on a
        # loaded machine a flood's next connections are checked before those threads start.
        self._admitted: dict[socket.socket, str] = {}

    def notices(self, require_tls: bool) -> list[str]:
        """What an administrator should know about where it listens and who can reach it."""
        said = []
        if self.local_only:
            said.append("Only this machine can send to it: an administrator sets the station's address with "
                        "'custodian policy set scp_address ADDRESS' (0.0.0.0 for every interface).")
        if require_tls and not self.secure:
            said.append("The site requires TLS and the storage SCP has no certificate, so every sender is "
                        "refused until an administrator sets one with 'custodian scp-tls'.")
        return said

    @staticmethod
    def _make_ae(ae_title: str, allowed: list[str]) -> AE:
        ae = application_entity(ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = allowed
        for storage in STORAGE_CLASSES:
            ae.add_supported_context(storage, TRANSFER_SYNTAXES)
        ae.add_supported_context(named_sop_class("Verification"))
        # The PACS reports storage commitment on an association of its own, as the SCP of the class.
        ae.add_supported_context(named_sop_class("StorageCommitmentPushModel"), scu_role=True,
                                 scp_role=True)
        ae.maximum_associations = 16
        ae.maximum_pdu_size = 1 << 20  # large P-DATA PDUs cost less Python per image; bounded memory
        ae.acse_timeout = ASSOCIATE_WAIT  # a silent connection (slow-loris) is closed after this
        return ae

    def _admit(self, request: socket.socket | tuple[bytes, socket.socket],
               client_address: tuple[str, int]) -> bool:
        """Whether a new connection may be served (socketserver's verify_request, called on the
        acceptor thread only): the running associations and those admitted but not started yet
        count, so a flood cannot slip past its share while the threads start."""
        assert self._server is not None  # only the running server calls it
        active = self._server.active_associations
        running = {assoc.dul.socket.socket for assoc in active if assoc.dul.socket is not None}
        # one started (its socket is an association's), closed, or wrapped for TLS (detached): gone
        self._admitted = {sock: peer for sock, peer in self._admitted.items()
                          if sock not in running and sock.fileno() != -1}
        peer = client_address[0]
        from_peer = sum(1 for assoc in active if assoc.requestor.address == peer) + \
            sum(1 for waiting in self._admitted.values() if waiting == peer)
        admitted = len(active) + len(self._admitted) < MAX_CONNECTIONS and from_peer < MAX_PER_PEER
        if admitted and isinstance(request, socket.socket):
            self._admitted[request] = peer
        return admitted

    def _on_requested(self, event: evt.Event) -> None:
        """Refuse a sender that is not who its AE title claims, with an A-ASSOCIATE-RJ (calling AE
        title not recognised), before anything is negotiated; the refusal is reported first, so it
        is in the trail before the sender learns of it."""
        assoc, calling = event.assoc, ""
        try:
            calling = str(cast(A_ASSOCIATE, assoc.requestor.primitive).calling_ae_title).strip()
            socket_ = assoc.dul.socket.socket if assoc.dul.socket is not None else None
            why = self._admission.refusal(calling, Peer.of(assoc.requestor.address, socket_))
        except Exception:  # fail closed: pynetdicom goes on with the association after a handler fails
            why = "its request could not be checked"
        if why is None:
            return
        try:
            self._refused(Refusal(calling, assoc.requestor.address, why))
        finally:  # refused even if the report fails
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected permanently by the service user
            assoc.kill()  # as pynetdicom ends an association it rejects itself

    def _on_store(self, event: evt.Event) -> int:
        try:
            data = part10(event)
        except Exception:  # a malformed request is refused, never fatal
            return CANNOT_UNDERSTAND
        try:
            self._budgets.take(event.assoc, len(data))
        except OverLimit:
            return OUT_OF_RESOURCES
        request = _store_request(event)
        originator, message_id = request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID
        move = (originator.strip(), message_id) if originator and message_id is not None else None
        return self.receiver.receive(event.assoc.requestor.ae_title, data, move).status

    def start(self) -> None:
        self._server = server = cast(_Server, self._ae.make_server(
            (self.host, self.port), ssl_context=self._tls, server_class=_Server,
            request_handler=PromptHandler,
            evt_handlers=[NO_DELAY, (evt.EVT_REQUESTED, self._on_requested),
                          (evt.EVT_C_STORE, self._on_store),
                          report_handler(self._reports or (lambda report: None))]))
        server.refused = self._refused
        # This server's own admission check in place of socketserver's, which admits everyone.
        server.verify_request = self._admit  # type: ignore[method-assign]
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="scp-acceptor", daemon=True).start()
        self._stopping.clear()
        threading.Thread(target=self._watch, args=(server,), name="scp-watchdog", daemon=True).start()

    def _watch(self, server: ThreadedAssociationServer) -> None:
        """Hang up on connections that have not become associations within ASSOCIATE_WAIT.

        pynetdicom waits as long as the peer likes for the rest of a PDU whose header declared more
        bytes than were sent, so its own timer never fires; closing the socket ends that wait."""
        # Keyed by the association itself (weakly): an id() could be reused by the next connection.
        first_seen: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            for assoc in server.active_associations:
                since = first_seen.setdefault(assoc, now)
                if not assoc.is_established and now - since > ASSOCIATE_WAIT and assoc.dul.socket:
                    with contextlib.suppress(OSError, AttributeError):
                        if (sock := assoc.dul.socket.socket) is not None:  # None: closed already
                            sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._refused.flush()
        if self._on_stop is not None:
            self._on_stop()
            self._on_stop = None
