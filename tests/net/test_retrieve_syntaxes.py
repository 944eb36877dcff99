"""C-GET and C-MOVE from Orthanc of studies it holds compressed (JPEG 2000), deflated, and a
Segmentation: each instance arrives in the syntax Orthanc holds it in, byte for byte, and the
counts (new, already here) are right, in the vault's report and in `retrieve --json`."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000, DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from app.demo.studies import Patient
from app.net.nodes import Node
from app.net.query import storage_contexts
from tests.conftest import CliUsers, VaultEnv, write_study
from tests.peers.orthanc import AET, Orthanc
from tests.peers.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None,
                                reason="Orthanc is not installed (installer/setup.sh does)")


@dataclass
class Held:
    """A study Orthanc holds: its UID and each instance's bytes as uploaded, by SOP Instance UID."""

    study_uid: str
    patient_id: str
    files: dict[str, bytes]


@dataclass
class Pacs:
    orthanc: Orthanc
    scp_port: int  # where Orthanc sends C-MOVE results: this workstation's storage SCP
    studies: dict[str, Held]


def _upload(peer: Orthanc, data: bytes) -> None:
    """Through Orthanc's REST API: it keeps the file as it is (a DICOM sender might transcode)."""
    request = urllib.request.Request(f"http://127.0.0.1:{peer.http_port}/instances", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["Status"] == "Success"


def _encoded(path: Path, syntax: str, **options: object) -> bytes:
    ds = pydicom.dcmread(path)
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax, **options)
    out = path.with_suffix(".enc")
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    folder = tmp_path_factory.mktemp("syntaxes")
    scp_port = free_port()
    peer = Orthanc(folder / "orthanc", known={"custodian": ("CUSTODIAN", scp_port)})
    peer.start()
    studies = {}
    # JPEG 2000: two slices lossless, two lossy (two contexts for one SOP class)
    ct = write_study(folder / "j2k", Patient("PID-J2K", "Wavelet^Wanda"), slices=4, size=32)
    j2k = [_encoded(p, JPEG2000Lossless) if n < 2 else _encoded(p, JPEG2000, j2k_cr=[10])
           for n, p in enumerate(ct)]
    ct = write_study(folder / "deflated", Patient("PID-DFL", "Deflated^Dora"), slices=3, size=32)
    deflated = [_encoded(p, DeflatedExplicitVRLittleEndian) for p in ct]
    seg = [Path(get_testdata_file("liver_1frame.dcm")).read_bytes()]  # a Segmentation object
    for name, files in (("j2k", j2k), ("deflated", deflated), ("seg", seg)):
        datasets = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)) for data in files]
        for data in files:
            _upload(peer, data)
        studies[name] = Held(str(datasets[0].StudyInstanceUID), str(datasets[0].PatientID),
                             {str(ds.SOPInstanceUID): data for ds, data in zip(datasets, files, strict=True)})
    yield Pacs(peer, scp_port, studies)
    peer.stop()


@pytest.fixture
def qr_env(env: VaultEnv, pacs: Pacs) -> VaultEnv:
    admin = env.login("admin")
    env.vault.nodes.add(admin, Node("pacs", AET, "127.0.0.1", pacs.orthanc.port))
    env.vault.admin.set_policy(admin, "scp_port", str(pacs.scp_port))
    return env


def _kept_as_sent(env: VaultEnv, held: Held) -> None:
    """Every instance is in the vault in the syntax Orthanc holds it in, its pixel data unchanged."""
    for sop_uid, data in held.files.items():
        stored = env.vault.reading.read_instance(env.login("rad"), sop_uid)
        kept = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored))
        sent = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert kept.PixelData == sent.PixelData and kept.SOPClassUID == sent.SOPClassUID


@pytest.mark.parametrize("move", [False, True], ids=["get", "move"])
@pytest.mark.parametrize("study", ["j2k", "deflated", "seg"])
def test_retrieve_keeps_the_syntax_and_counts_right(qr_env: VaultEnv, pacs: Pacs, study: str,
                                                    move: bool) -> None:
    held, rad = pacs.studies[study], qr_env.login("rad")
    count = len(held.files)
    report = qr_env.vault.pacs.retrieve(rad, "pacs", held.study_uid, move=move)
    assert (report.received, report.imported, report.duplicates, report.refused,
            report.failed_at_pacs) == (count, count, 0, [], 0)
    assert report.summary() == f"Retrieved {count} image(s): {count} new, 0 already here."
    _kept_as_sent(qr_env, held)
    again = qr_env.vault.pacs.retrieve(rad, "pacs", held.study_uid, move=not move)  # the other way
    assert (again.received, again.imported, again.duplicates, again.refused) == (count, 0, count, [])
    (cached,) = qr_env.vault.reading.studies(rad, held.patient_id)
    assert cached.instances == count


def test_cli_retrieve_json_counts(cli_users: CliUsers, pacs: Pacs) -> None:
    cli = cli_users.cli
    assert cli("node", "add", "pacs", "--aet", AET, "--host", "127.0.0.1",
               "--port", str(pacs.orthanc.port)).returncode == 0
    assert cli.json("policy", "set", "scp_port", str(pacs.scp_port))["scp_port"] == pacs.scp_port
    cli_users.login("tech")
    j2k, deflated = pacs.studies["j2k"], pacs.studies["deflated"]
    fields = ("received", "imported", "duplicates", "refused", "failed_at_pacs")
    moved = cli.json("retrieve", "pacs", j2k.study_uid, "--move")
    assert [moved[k] for k in fields] == [4, 4, 0, [], 0] and moved["by_move"] is True
    got = cli.json("retrieve", "pacs", j2k.study_uid)
    assert [got[k] for k in fields] == [4, 0, 4, [], 0]
    got = cli.json("retrieve", "pacs", deflated.study_uid)
    assert [got[k] for k in fields] == [3, 3, 0, [], 0]
    moved = cli.json("retrieve", "pacs", deflated.study_uid, "--move")
    assert [moved[k] for k in fields] == [3, 0, 3, [], 0]


def test_get_proposes_every_syntax_for_the_studys_classes_within_128_contexts() -> None:
    ct, seg = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.66.4"
    contexts = storage_contexts([ct, seg])
    assert len(contexts) == 127  # and the C-GET's own context makes 128
    for sop_class in (ct, seg):
        offered = [syntax for c, syntaxes in contexts if c == sop_class for syntax in syntaxes]
        assert len(offered) == 16 and JPEG2000 in offered and DeflatedExplicitVRLittleEndian in offered
    nine = [f"1.2.840.10008.5.1.4.1.1.{n}"
            for n in ("1", "2", "4", "7", "12.1", "20", "128", "481.1", "66.4")]
    assert len(storage_contexts(nine)) == 127
    assert {c for c, _ in storage_contexts(nine)[:126]} == set(nine)  # nine classes with all 14 each
