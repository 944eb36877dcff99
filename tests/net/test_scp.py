"""The storage SCP against DCMTK storescu and a pynetdicom sender: durable, refusing strangers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.errors import UsageError
from app.net.nodes import Node
from app.net.scp import CANNOT_UNDERSTAND, SUCCESS, StorageScp
from app.security.tls import TlsIdentity
from tests.conftest import VaultEnv, write_study
from tests.peers.dcmtk import storescu
from tests.peers.pki import Authority

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None,
                                reason="DCMTK is not installed (installer/setup.sh does)")


@pytest.fixture
def scp(env: VaultEnv) -> Iterator[StorageScp]:
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("modality", "STORESCU", "127.0.0.1", 104))
    env.vault.nodes.add(admin, Node("sender", "PYSENDER", "127.0.0.1", 104))
    server = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    server.start()
    yield server
    server.stop()


def test_storescu_sends_a_study_into_the_vault(env: VaultEnv, scp: StorageScp, tmp_path: Path) -> None:
    files = write_study(tmp_path / "ct", Patient("PID-SCP", "Sent^Study"), slices=12, size=64)
    sent = storescu(scp.port, files, called="CUSTODIAN")
    assert sent.returncode == 0, sent.stderr
    (study,) = env.vault.reading.studies(env.login("rad"), "PID-SCP")
    assert study.instances == 12
    # Each commit is audited with what it stored, in the same transaction, naming the sender.
    events = env.vault._gate._audit.records(AuditQuery(user="dicom:STORESCU", event_type=EventType.IMPORT))
    assert sum(e.detail["instances"] for e in events) == 12
    assert {e.patients for e in events} == {("PID-SCP",)}
    sop = pydicom.dcmread(files[3]).SOPInstanceUID
    stored = pydicom.dcmread(
        pydicom.filebase.DicomBytesIO(env.vault.reading.read_instance(env.login("rad"), sop)))
    assert stored.PixelData == pydicom.dcmread(files[3]).PixelData
    assert env.vault.admin.verify(env.login("tech")).ok


def test_strangers_and_wrong_addresses_are_refused(env: VaultEnv, scp: StorageScp, tmp_path: Path) -> None:
    files = write_study(tmp_path / "ct", Patient("PID-NOPE", "Not^Accepted"), slices=1, size=16)
    assert storescu(scp.port, files, calling="STRANGER", called="CUSTODIAN").returncode != 0
    assert storescu(scp.port, files, called="SOMEONE-ELSE").returncode != 0
    assert env.vault.reading.studies(env.login("rad"), "PID-NOPE") == []


def test_conflicting_data_is_refused_with_a_failure_status(env: VaultEnv, scp: StorageScp,
                                                           tmp_path: Path) -> None:
    (path,) = write_study(tmp_path / "ct", Patient("PID-CONFLICT", "Same^Uid"), slices=1, size=16)

    def implicit(ds: pydicom.Dataset) -> pydicom.Dataset:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(tmp_path / "implicit.dcm", enforce_file_format=True)
        return pydicom.dcmread(tmp_path / "implicit.dcm")

    original = pydicom.dcmread(path)
    altered = pydicom.dcmread(path)
    altered.PixelData = bytes(len(altered.PixelData))  # same SOP Instance UID, other pixels
    other_slice = pydicom.dcmread(path)  # another slice under the same UID, in another syntax
    other_slice.InstanceNumber = 2
    other_slice.ImagePositionPatient[2] += 5
    sender = AE(ae_title="PYSENDER")
    sender.add_requested_context(CTImageStorage, original.file_meta.TransferSyntaxUID)
    sender.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    assoc = sender.associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in (
            original, original, implicit(pydicom.dcmread(path)), altered, implicit(other_slice))]
    finally:
        assoc.release()
    # a repeat is fine, so is the same instance in another syntax; a clash is not
    assert statuses == [SUCCESS, SUCCESS, SUCCESS, CANNOT_UNDERSTAND, CANNOT_UNDERSTAND]
    (study,) = env.vault.reading.studies(env.login("rad"), "PID-CONFLICT")
    assert study.instances == 1


def test_several_senders_at_once_share_commits(env: VaultEnv, scp: StorageScp, tmp_path: Path) -> None:
    folders = [write_study(tmp_path / f"ct{i}", Patient(f"PID-PAR{i}", "Parallel^Sender"), slices=8, size=32)
               for i in range(3)]
    senders = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", "CUSTODIAN", "127.0.0.1",
                                 str(scp.port), *map(str, files)], stderr=subprocess.PIPE)
               for files in folders]
    assert all(p.wait(120) == 0 for p in senders)
    rad = env.login("rad")
    assert [len(env.vault.reading.studies(rad, f"PID-PAR{i}")) for i in range(3)] == [1, 1, 1]
    assert sum(s.instances for i in range(3) for s in env.vault.reading.studies(rad, f"PID-PAR{i}")) == 24


def test_without_nodes_nobody_may_send(env: VaultEnv) -> None:
    with pytest.raises(UsageError, match="nobody would be allowed"):
        env.vault.pacs.storage_scp(port=0)


def test_the_scp_over_tls_takes_only_trusted_senders(env: VaultEnv, tmp_path: Path) -> None:
    site = Authority(tmp_path / "pki")
    ours, sender = site.issue("workstation-7"), site.issue("modality-1")
    outsider = Authority(tmp_path / "outsider", "Outsider CA").issue("modality-1")
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("modality", "STORESCU", "127.0.0.1", 104))
    env.vault.nodes.set_scp_tls(admin, TlsIdentity.from_files(site.cert, ours.cert, ours.key))
    server = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    server.start()
    try:
        files = write_study(tmp_path / "ct", Patient("PID-TLS", "Secure^Sid"), slices=2, size=16)
        plain = storescu(server.port, files, called="CUSTODIAN")
        assert plain.returncode != 0
        untrusted = storescu(server.port, files, called="CUSTODIAN", tls=(site.cert, outsider))
        assert untrusted.returncode != 0
        assert env.vault.reading.studies(env.login("rad"), "PID-TLS") == []
        sent = storescu(server.port, files, called="CUSTODIAN", tls=(site.cert, sender))
        assert sent.returncode == 0, sent.stderr
        (study,) = env.vault.reading.studies(env.login("rad"), "PID-TLS")
        assert study.instances == 2
    finally:
        server.stop()
