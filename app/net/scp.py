"""The storage SCP: instances sent by the PACS (C-MOVE results) and modalities go into the vault.

Each C-STORE is answered only once its instance is durably in the vault's keeping (its sealed
blob synced in the receiver's journal; indexed behind it, and replayed after a crash: see
app/store/journal.py), so a sender never deletes or forgets something we might lose; a sender's
release is answered once all it sent is indexed. Instances arriving on all associations at once are
journaled together, and each handler waits for its own outcome. Only the
configured PACS nodes may send, each from its own address or with its own certificate
(:mod:`app.net.admission`), and only to our own AE title; a refusal is an A-ASSOCIATE-RJ, reported.

It takes what an import takes: every storage SOP class (retired ones too: old modalities and
archives still send them) in every transfer syntax the viewer can display, kept exactly as sent.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from pydicom import uid
from pynetdicom import AllStoragePresentationContexts
from pynetdicom import sop_class as sop
from pynetdicom.service_class import ServiceClass

from app.background import GroupCommit
from app.errors import UsageError
from app.net import commands, pdu
from app.net.acceptor import ASSOCIATE_WAIT, Acceptor
from app.net.admission import Admission, Peer, address_of
from app.net.association import named_sop_class
from app.net.commitment import Reports, read_report
from app.net.inbound import MAX_PDU, UNRECOGNISED, Message, Messages, negotiate, serve
from app.net.part10 import data_set, part10
from app.net.pdu import Channel, ProtocolError
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
    """pynetdicom's storage classes and every other (mostly retired) one pydicom's dictionary names
    that pynetdicom does not give to another service."""
    # (each of these contexts has its abstract syntax: pynetdicom types it as optional)
    known: set[str] = {context.abstract_syntax for context in AllStoragePresentationContexts
                       if context.abstract_syntax is not None}
    for number, (name, kind, _, _, keyword) in uid.UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or number in known | _NOT_FOR_THE_VAULT:
            continue
        if sop.uid_to_service_class(number) is ServiceClass and not hasattr(sop, keyword):
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


STORAGE = frozenset(STORAGE_CLASSES)  # (for lookups)
MAX_ASSOCIATIONS = 16  # established at once; beyond, a sender is told to retry later
COMMITMENT = str(named_sop_class("StorageCommitmentPushModel"))
# What each association may use: storage as sent (see TRANSFER_SYNTAXES); verification and the
# storage commitment report, whose messages carry no images, uncompressed.
SUPPORTED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(STORAGE_CLASSES, TRANSFER_SYNTAXES),
    str(named_sop_class("Verification")): UNCOMPRESSED, COMMITMENT: UNCOMPRESSED}


class StorageScp:
    def __init__(self, store: Store, *, ae_title: str, port: int, admission: Admission,
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 on_stop: Callable[[], None] | None = None, reports: Reports | None = None,
                 refused: Refused | None = None, limits: IntakeLimits = DEFAULT_LIMITS,
                 settle: Callable[[], None] = lambda: None) -> None:
        """``settle``: wait until what was answered is indexed (before a sender's release is)."""
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
        self._ae_title = ae_title.strip()
        self._admission = admission
        self._tls = tls
        self._on_stop = on_stop
        self._reports = reports or (lambda report: None)
        self._refused = RefusalDigest(refused or (lambda refusal: None))  # a flood: counted, not listed
        self._limits = limits
        self._budgets = Budgets(limits)  # what each association may send (the site's intake limits)
        self._settle = settle
        self._acceptor: Acceptor | None = None
        self._established = 0
        self._lock = threading.Lock()

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

    def start(self) -> None:
        """Listen (an OSError when the port is taken) and serve on threads of its own."""
        self._acceptor = Acceptor(self.host, self.port, self._tls, self._serve, self._refused)
        self.port = self._acceptor.port
        self._acceptor.start()

    def _serve(self, sock: socket.socket, address: str) -> None:
        """One connection: its association request answered, then its messages until it ends."""
        channel = Channel(sock)
        try:
            kind, body = channel.read(pdu.MAX_REQUEST, ASSOCIATE_WAIT)
            if kind != pdu.ASSOCIATE_RQ:
                raise ProtocolError("no association request")
            request = pdu.parse_request(bytes(body))
            refusal, why = self._refusal(request, sock, address)
            if refusal is not None:
                try:
                    if why:
                        self._refused(Refusal(request.calling_ae, address, why))
                finally:  # refused even if the report fails
                    channel.send(pdu.reject(refusal))
                return
            with self._slot() as admitted:
                if not admitted:
                    channel.send(pdu.reject(pdu.REJECT_BUSY))
                    return
                outcomes, roles = negotiate(request, SUPPORTED, frozenset({COMMITMENT}))
                channel.send(pdu.accept(request, outcomes, roles, MAX_PDU, pdu.IMPLEMENTATION))
                proposed = {c.context_id: c.abstract_syntax for c in request.contexts}
                contexts = {c.context_id: (proposed[c.context_id], c.transfer_syntax)
                            for c in outcomes if c.result == pdu.ACCEPTED}
                messages = Messages(channel, contexts, max_data=self._limits.file_bytes,
                                    max_send=request.max_length, releasing=self._settle)
                serve(messages, partial(self._on_message, channel, request.calling_ae))
        except ProtocolError:
            with contextlib.suppress(OSError):
                channel.send(pdu.ABORTED)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[bool]:
        """One of MAX_ASSOCIATIONS places, while the association lasts (False: none is free)."""
        with self._lock:
            admitted = self._established < MAX_ASSOCIATIONS
            self._established += admitted
        try:
            yield admitted
        finally:
            with self._lock:
                self._established -= admitted

    def _refusal(self, request: pdu.AssociateRequest, sock: socket.socket,
                 address: str) -> tuple[tuple[int, int, int] | None, str]:
        """How a request is rejected, if it is, and why for the audit trail: a sender that is not
        who its AE title claims is reported before it learns of its refusal."""
        if not request.version & 1:
            return pdu.REJECT_VERSION, ""
        if request.application_context != pdu.APPLICATION_CONTEXT:
            return pdu.REJECT_CONTEXT, ""
        if request.called_ae != self._ae_title:
            return pdu.REJECT_CALLED_AE, ""
        try:
            why = self._admission.refusal(request.calling_ae, Peer.of(address, sock))
        except Exception:  # fail closed
            why = "its request could not be checked"
        return (None, "") if why is None else (pdu.REJECT_NOT_ALLOWED, why)

    def _on_message(self, association: Channel, calling_ae: str, message: Message) -> int:
        """The status to answer a request with: a C-STORE stored, a storage commitment report passed
        on, a C-ECHO answered."""
        field, (abstract, syntax) = message.command.field, message.context
        if field == commands.C_ECHO_RQ:
            return SUCCESS
        if field == commands.N_EVENT_REPORT_RQ and abstract == COMMITMENT:
            return self._report(message)
        if field != commands.C_STORE_RQ or abstract not in STORAGE:  # (on a storage context only)
            return UNRECOGNISED
        if message.data is None:
            return OUT_OF_RESOURCES  # larger than one file may be (site policy)
        command = message.command
        try:
            data = part10(command.text(commands.AFFECTED_SOP_CLASS),
                          command.text(commands.AFFECTED_SOP_INSTANCE), syntax, message.data)
            self._budgets.take(association, len(data))
        except OverLimit:
            return OUT_OF_RESOURCES
        except ValueError:  # a malformed request is refused, never fatal
            return CANNOT_UNDERSTAND
        originator = command.text(commands.MOVE_ORIGINATOR_AE)
        move_id = command.number(commands.MOVE_ORIGINATOR_ID)
        move = (originator, move_id) if originator and move_id is not None else None
        return self.receiver.receive(calling_ae, data, move).status

    def _report(self, message: Message) -> int:
        try:
            info = data_set(message.data or b"", message.context[1])
            report = read_report(COMMITMENT, info)
        except Exception:  # an unreadable report is refused, never fatal
            return CANNOT_UNDERSTAND
        if report is None:
            return 0x0112  # no such SOP instance
        self._reports(report)
        return SUCCESS

    def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.stop()
            self._acceptor = None
        self._refused.flush()
        if self._on_stop is not None:
            self._on_stop()
            self._on_stop = None
