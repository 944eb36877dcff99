"""The storage SCP's own upper layer (no pynetdicom on the receive path): what it answers to a
pynetdicom requestor and to hand-made PDUs off the protocol."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import cast

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ImplicitVRLittleEndian
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from app.demo.studies import Patient, ct_study
from app.net import commands, pdu, requestor
from app.net import scp as scp_module
from app.net.nodes import Node
from app.net.part10 import part10
from app.net.requestor import Proposal
from app.net.scp import OUT_OF_RESOURCES, SUCCESS, StorageScp
from app.store.limits import MB
from tests.conftest import VaultEnv

SENDER = "PYSENDER"


@pytest.fixture
def scp(env: VaultEnv) -> Iterator[StorageScp]:
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("sender", SENDER, "127.0.0.1", 104))
    env.vault.admin.set_policy(admin, "intake_file_max_mb", "1")
    server = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    server.start()
    yield server
    server.stop()


def _requestor(*contexts: str) -> AE:
    ae = AE(ae_title=SENDER)
    for context in contexts or (CTImageStorage, Verification):
        ae.add_requested_context(context)
    return ae


def test_echo_store_and_release(env: VaultEnv, scp: StorageScp) -> None:
    small, = ct_study(Patient("PID-IN", "Inbound^Ida"), slices=1, size=16)
    assoc = _requestor().associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == SUCCESS
    assert assoc.send_c_store(small).Status == SUCCESS
    assoc.release()
    assert not assoc.is_aborted
    (study,) = env.vault.reading.studies(env.login("rad"), "PID-IN")
    assert study.instances == 1


def test_a_data_set_over_the_file_limit_is_refused_and_not_kept(env: VaultEnv, scp: StorageScp) -> None:
    big, = ct_study(Patient("PID-BIG", "Large^Lou"), slices=1, size=1024)  # 2 MB of pixels: over 1 MB
    ok, = ct_study(Patient("PID-OK", "Small^Sam"), slices=1, size=16)
    assoc = _requestor().associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
    assert assoc.send_c_store(big).Status == OUT_OF_RESOURCES
    assert assoc.send_c_store(ok).Status == SUCCESS  # the association goes on
    assoc.release()
    assert [s.patient_id for s in env.vault.reading.studies(env.login("rad"))] == ["PID-OK"]


def test_wrong_called_ae_title_is_rejected(scp: StorageScp) -> None:
    assoc = _requestor().associate("127.0.0.1", scp.port, ae_title="SOMEONE")
    assert assoc.is_rejected


def test_an_unknown_protocol_version_is_rejected_as_such(scp: StorageScp) -> None:
    proposal = Proposal(CTImageStorage, ("1.2.840.10008.1.2",))
    request = bytearray(requestor.request("CUSTODIAN", SENDER, [proposal]))
    request[6:8] = b"\x00\x02"  # protocol version 2 only
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as sock:
        sock.sendall(request)
        answer = sock.recv(10)
    assert answer[0] == pdu.ASSOCIATE_RJ and tuple(answer[7:10]) == pdu.REJECT_VERSION


def test_unknown_services_are_refused_context_by_context(scp: StorageScp) -> None:
    assoc = _requestor(CTImageStorage, "1.2.840.10008.5.1.4.1.2.2.1").associate(  # and study root find
        "127.0.0.1", scp.port, ae_title="CUSTODIAN")
    assert assoc.is_established
    assert [c.abstract_syntax for c in assoc.accepted_contexts] == [CTImageStorage]
    assoc.release()


def test_beyond_the_association_limit_a_sender_is_told_to_retry(scp: StorageScp,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scp_module, "MAX_ASSOCIATIONS", 2)  # (MAX_PER_PEER closes the door first)
    held = [_requestor().associate("127.0.0.1", scp.port, ae_title="CUSTODIAN") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        extra = _requestor().associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
        assert extra.is_rejected
        assert extra.acceptor.primitive.result == 2  # type: ignore[union-attr]  # transient
    finally:
        for a in held:
            a.release()
    again = _requestor().associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
    assert again.is_established
    again.release()


def _raw_association(port: int) -> socket.socket:
    """An association made by hand: CT storage on context 1, Explicit VR Little Endian."""
    def item(kind: int, value: bytes) -> bytes:
        return struct.pack(">BxH", kind, len(value)) + value

    context = item(0x20, bytes((1, 0, 0, 0)) + item(0x30, CTImageStorage.encode()) +
                   item(0x40, b"1.2.840.10008.1.2.1"))
    body = struct.pack(">H2x16s16s32x", 1, b"CUSTODIAN".ljust(16), SENDER.encode().ljust(16)) + \
        item(0x10, pdu.APPLICATION_CONTEXT.encode()) + context + \
        item(0x50, item(0x51, struct.pack(">I", 16384)))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(struct.pack(">BxI", 1, len(body)) + body)
    assert sock.recv(1)[0] == pdu.ASSOCIATE_AC
    sock.recv(65536)
    return sock


def _answer(sock: socket.socket) -> int:
    """The type of the next PDU the SCP sends (0: it hung up)."""
    got = sock.recv(6)
    return got[0] if got else 0


@pytest.mark.parametrize("pdv", [
    struct.pack(">IBB", 4, 3, 0x03) + b"xx",  # on a context never proposed
    struct.pack(">IBB", 4, 1, 0x00) + b"xx",  # a data set with no command before it
    struct.pack(">IBB", 0xFFFF, 1, 0x03) + b"xx",  # a length past its PDU
], ids=["unknown context", "data first", "overlong"])
def test_p_data_off_the_protocol_is_aborted(scp: StorageScp, pdv: bytes) -> None:
    sock = _raw_association(scp.port)
    with sock:
        sock.sendall(struct.pack(">BxI", pdu.P_DATA, len(pdv)) + pdv)
        assert _answer(sock) == pdu.ABORT


def test_a_pdu_over_the_agreed_size_is_aborted_before_it_is_read(scp: StorageScp) -> None:
    sock = _raw_association(scp.port)
    with sock:
        sock.sendall(struct.pack(">BxI", pdu.P_DATA, 64 * MB))  # declared, never sent
        assert _answer(sock) == pdu.ABORT


def test_command_sets_round_trip() -> None:
    request = commands.read(commands.write({
        commands.COMMAND_FIELD: commands.C_STORE_RQ, commands.MESSAGE_ID: 7,
        commands.AFFECTED_SOP_CLASS: CTImageStorage, commands.AFFECTED_SOP_INSTANCE: "1.2.3",
        commands.DATA_SET_TYPE: 0}))
    assert (request.field, request.has_data, request.text(commands.AFFECTED_SOP_INSTANCE)) == \
        (commands.C_STORE_RQ, True, "1.2.3")
    answer = commands.read(commands.response(request, commands.C_STORE_RSP, SUCCESS))
    assert answer.number(commands.RESPONDING_TO) == 7
    assert answer.number(commands.STATUS) == SUCCESS
    assert answer.text(commands.AFFECTED_SOP_CLASS) == CTImageStorage
    with pytest.raises(pdu.ProtocolError):
        commands.read(commands.write({commands.MESSAGE_ID: 1})[:-1])


@pytest.mark.parametrize("instance", ["1.2.3.44", "1.2.3.4"])  # even and odd lengths
def test_file_meta_is_byte_for_byte_what_pydicom_wrote(instance: str) -> None:
    """The vault tells a resend from a clash by the file's SHA-256: what was received before this
    upper layer (file meta written by pydicom, as pynetdicom named itself) must hash alike."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\0\1"
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(instance)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    written = DicomBytesIO()
    written.write(bytes(128) + b"DICM")
    write_file_meta_info(written, meta, enforce_standard=True)
    assert part10(cast(str, CTImageStorage), instance, "1.2.840.10008.1.2", b"DATA") == \
        written.getvalue() + b"DATA"
    with pytest.raises(ValueError):
        part10(CTImageStorage, "1.2.3\0 not a uid", "1.2.840.10008.1.2", b"")
