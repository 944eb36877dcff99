"""The storage SCP takes what an import takes: pydicom's real files, each sent by DCMTK storescu in
its own transfer syntax, are stored byte for byte; a re-send in another syntax is a duplicate, not a
conflict; and where a sender offers both, Explicit VR Little Endian wins over Implicit."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    UID_dictionary,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from app.net.nodes import Node
from app.net.scp import StorageScp
from app.security.roles import Role
from app.store.ingest import DicomDirectory, ParsedInstance, Rejected, parse
from app.store.records import ImportReport
from tests.conftest import VaultEnv, make_env

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None,
                                reason="DCMTK is not installed (installer/setup.sh does)")

# storescu's option proposing each transfer syntax (beside the uncompressed ones)
OPTION = {
    "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr",
}
UNCOMPRESSED_OPTIONS = ("-xe", "-xb", "-xi", "-xd")
COMPRESSION_OPTIONS = ("-xs", "-xy", "-xx", "-xv", "-xw", "-xt", "-xu", "-xr")


def _importable() -> list[tuple[Path, ParsedInstance]]:
    """pydicom's local test files that an import accepts."""
    found = []
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if not path.is_file():
            continue
        with contextlib.suppress(Rejected, DicomDirectory):
            found.append((path, parse(path.read_bytes())))
    return found


def _layers() -> list[list[tuple[Path, ParsedInstance]]]:
    """The files in layers where no SOP Instance UID repeats: some of pydicom's files are one
    instance in several syntaxes, others different objects under one UID (a conflict, tested apart)."""
    layers: list[list[tuple[Path, ParsedInstance]]] = []
    for item in _importable():
        layer = next((each for each in layers if item[1].sop_uid not in {p.sop_uid for _, p in each}),
                     None)
        if layer is None:
            layers.append(layer := [])
        layer.append(item)
    return layers


LAYERS = _layers()


@contextlib.contextmanager
def receiving(home: Path) -> Iterator[tuple[VaultEnv, StorageScp, ImportReport]]:
    """A new vault with its storage SCP listening, and the running total of what the SCP's
    receiver stored (its own reports, as the vault gave them)."""
    env = make_env(home)
    env.add("rad", Role.RADIOLOGIST)
    env.vault.nodes.add(env.login("admin"), Node("modality", "STORESCU", "127.0.0.1", 104))
    env.vault.nodes.add(env.login("admin"), Node("sender", "PYSENDER", "127.0.0.1", 104))
    scp = env.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    total = ImportReport()
    store = scp.receiver.store

    def counted(ae: str, items: list[tuple[str, bytes]]) -> ImportReport:
        report = store(ae, items)
        total.imported += report.imported
        total.duplicates += report.duplicates
        total.rejected += report.rejected
        return report

    scp.receiver.store = counted
    scp.start()
    try:
        yield env, scp, total
    finally:
        scp.stop()
        env.vault.close()


def storescu(port: int, files: list[Path], *options: str) -> subprocess.CompletedProcess[str]:
    """storescu, verbose with the negotiated contexts; it exits non-zero on any failure status."""
    return subprocess.run(["storescu", "-v", "+v", *options, "-aet", "STORESCU", "-aec", "CUSTODIAN",
                           "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True,
                          timeout=120)


def accepted_syntaxes(sent: subprocess.CompletedProcess[str]) -> set[str]:
    """The transfer syntaxes our SCP accepted, from storescu's print of the A-ASSOCIATE-AC."""
    log = sent.stdout + sent.stderr
    reply = log.split("BEGIN A-ASSOCIATE-AC")[1].split("END A-ASSOCIATE-AC")[0]
    return set(re.findall(r"Accepted Transfer Syntax: (\S+)", reply))


def pysend(port: int, path: Path, syntax: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """pynetdicom sending a file's own bytes, undecoded, in its own syntax (what storescu cannot read)."""
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    sender = AE(ae_title="PYSENDER")
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    sender.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, syntax)
    assoc = sender.associate("127.0.0.1", port, ae_title="CUSTODIAN")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def stored(env: VaultEnv, sop_uid: str) -> pydicom.Dataset:
    data = env.vault.reading.read_instance(env.login("rad"), sop_uid)
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))


def test_the_files_cover_the_syntaxes() -> None:
    """What the test below sends: most of pydicom's files, in eleven transfer syntaxes."""
    syntaxes = {parsed.transfer_syntax for layer in LAYERS for _, parsed in layer}
    assert sum(map(len, LAYERS)) > 140 and len(syntaxes) >= 11


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=lambda n: f"layer{n}")
def test_every_importable_test_file_is_stored_in_its_own_syntax(layer: int, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file in a vault that has no other object under its UID: answered success, stored in the
    syntax it was sent in, its pixel data byte for byte."""
    failures = []
    with receiving(tmp_path / "home") as (env, scp, total):
        for path, parsed in LAYERS[layer]:
            option = OPTION.get(parsed.transfer_syntax)
            sent = storescu(scp.port, [path], "-R", option) if option else None
            if sent is None or "missing SOP class (or instance) in file" in sent.stderr:
                # DCMTK cannot read a few of them (or propose the syntax): pynetdicom sends the bytes
                ok = pysend(scp.port, path, parsed.transfer_syntax, monkeypatch) == 0
            else:
                ok = sent.returncode == 0
            if not ok:
                failures.append((path.name, UID(parsed.transfer_syntax).name))
                continue
            ds, original = stored(env, parsed.sop_uid), pydicom.dcmread(path, force=True)
            if ds.file_meta.TransferSyntaxUID != parsed.transfer_syntax:
                failures.append((path.name, f"stored as {UID(ds.file_meta.TransferSyntaxUID).name}"))
            elif "PixelData" in original and ds.PixelData != original.PixelData:
                failures.append((path.name, "pixel data changed"))
        assert failures == []
        assert (total.imported, total.duplicates, total.rejected) == (len(LAYERS[layer]), 0, [])


@pytest.mark.parametrize("option", UNCOMPRESSED_OPTIONS + COMPRESSION_OPTIONS)
def test_each_storescu_option_is_answered_and_explicit_vr_wins(option: str, tmp_path: Path) -> None:
    """Separate contexts for each syntax (storescu's default), then all in one context (+C): there the
    SCP chooses, and takes Explicit VR Little Endian whenever it is offered, never a compression."""
    files = [Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("SC_rgb_jpeg_dcmd.dcm"))]
    with receiving(tmp_path / "home") as (env, scp, total):
        separate = storescu(scp.port, files, option)
        assert separate.returncode == 0, separate.stderr
        assert (total.imported, total.duplicates) == (2, 0)
        for path in files:
            original = pydicom.dcmread(path)
            assert (stored(env, original.SOPInstanceUID).pixel_array == original.pixel_array).all()
        combined = storescu(scp.port, files, option, "+C")
        assert combined.returncode == 0, combined.stderr
        assert (total.imported, total.duplicates, total.rejected) == (2, 2, [])
    only_implicit = option == "-xi"
    expected = "=LittleEndianImplicit" if only_implicit else "=LittleEndianExplicit"
    assert accepted_syntaxes(combined) == {expected}


def test_a_resend_in_another_syntax_is_a_duplicate_and_a_clash_is_not(tmp_path: Path) -> None:
    mr_family = ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_RLE.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
    first, ct = Path(get_testdata_file("MR_small.dcm")), Path(get_testdata_file("CT_small.dcm"))
    with receiving(tmp_path / "home") as (env, scp, total):
        assert storescu(scp.port, [first, ct], "-xe").returncode == 0
        for name in mr_family:
            path = Path(get_testdata_file(name))
            syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            sent = storescu(scp.port, [path], "-R", OPTION[syntax])
            assert sent.returncode == 0, (name, sent.stderr)
        deflated = storescu(scp.port, [ct], "-R", "-xd")  # storescu deflates it on the way
        assert deflated.returncode == 0 and "=DeflatedLittleEndianExplicit" in accepted_syntaxes(deflated)
        assert (total.imported, total.duplicates, total.rejected) == (2, len(mr_family) + 1, [])
        original = pydicom.dcmread(first)
        kept = stored(env, original.SOPInstanceUID)  # the first copy stays, as it was sent
        assert kept.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert kept.PixelData == original.PixelData
        assert env.vault.reading.studies(env.login("rad"), str(original.PatientID))[0].instances == 1

        # Another object under a stored UID is still refused: in the same syntax with other bytes (two
        # frames where one is stored), or in another syntax with other frames.
        for first_sent, clashing in (("SC_rgb_rle.dcm", "SC_rgb_rle_2frame.dcm"),
                                     ("rtdose_1frame.dcm", "rtdose_expb.dcm")):
            paths = [Path(get_testdata_file(first_sent)), Path(get_testdata_file(clashing))]
            syntaxes = [pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                        for p in paths]
            assert storescu(scp.port, paths[:1], "-R", OPTION[syntaxes[0]]).returncode == 0
            clash = storescu(scp.port, paths[1:], "-R", OPTION[syntaxes[1]])
            assert clash.returncode != 0 and "Store Response (Error: CannotUnderstand)" in clash.stderr
        assert [r.reason for r in total.rejected] == [
            "a different object with the same SOP Instance UID is already stored"] * 2


def test_explicit_vr_is_chosen_so_private_elements_keep_their_vr(tmp_path: Path) -> None:
    """pynetdicom proposing Implicit first in one context: the SCP's order decides."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    block = ds.private_block(0x0029, "CUSTODIAN TEST", create=True)
    block.add_new(0x01, "FD", 2.5)
    sender = AE(ae_title="PYSENDER")
    offers = ([ImplicitVRLittleEndian, ExplicitVRLittleEndian], [ExplicitVRBigEndian, ImplicitVRLittleEndian],
              [JPEG2000Lossless, ImplicitVRLittleEndian], [JPEG2000Lossless])
    for syntaxes in offers:
        sender.add_requested_context(CTImageStorage, syntaxes)
    with receiving(tmp_path / "home") as (env, scp, _):
        assoc = sender.associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
        assert assoc.is_established
        try:
            contexts = sorted(assoc.accepted_contexts, key=lambda c: c.context_id)
            chosen = [c.transfer_syntax[0] for c in contexts]
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            assert assoc.send_c_store(ds).Status == 0x0000
        finally:
            assoc.release()
        kept = stored(env, ds.SOPInstanceUID)
    assert chosen == [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ImplicitVRLittleEndian,
                      JPEG2000Lossless]
    assert kept.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    private = kept[block.get_tag(0x01)]
    assert private.VR == "FD" and private.value == 2.5


def test_every_storage_class_pydicom_names_is_accepted_retired_ones_too(tmp_path: Path) -> None:
    """All of them (pynetdicom asks at most 128 at a time); only those the vault has no place for
    (storage commitment, DICOMDIR, objects without a patient) are refused at the door."""
    named = sorted(u for u, (name, kind, *_) in UID_dictionary.items()
                   if kind == "SOP Class" and "Storage" in name)
    not_for_the_vault = {
        "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.2", "1.2.840.10008.1.3.10",  # commitment, DICOMDIR
        "1.2.840.10008.5.1.4.38.1", "1.2.840.10008.5.1.4.39.1",  # hanging protocol, colour palette
        "1.2.840.10008.5.1.4.43.1", "1.2.840.10008.5.1.4.44.1", "1.2.840.10008.5.1.4.45.1",  # implants
        "1.2.840.10008.5.1.4.1.1.200.1", "1.2.840.10008.5.1.4.1.1.200.3",  # defined protocol, approval
        "1.2.840.10008.5.1.4.1.1.200.7", "1.2.840.10008.5.1.4.1.1.201.1",  # XA defined protocol, inventory
    }
    assert {"1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.5"} <= set(named) - not_for_the_vault
    accepted: set[str] = set()
    with receiving(tmp_path / "home") as (_, scp, _):
        for start in range(0, len(named), 128):
            sender = AE(ae_title="PYSENDER")
            for sop_class in named[start:start + 128]:
                sender.add_requested_context(sop_class, ExplicitVRLittleEndian)
            assoc = sender.associate("127.0.0.1", scp.port, ae_title="CUSTODIAN")
            if assoc.is_established:
                accepted |= {str(c.abstract_syntax) for c in assoc.accepted_contexts}
                assoc.release()
    # (Storage Commitment Push is taken, as the service the PACS reports commitment with)
    assert accepted - {"1.2.840.10008.1.20.1"} == set(named) - not_for_the_vault


def test_a_retired_ultrasound_image_is_stored(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6"  # retired
    ds.save_as(tmp_path / "us.dcm", enforce_file_format=True)
    with receiving(tmp_path / "home") as (env, scp, total):
        sent = storescu(scp.port, [tmp_path / "us.dcm"], "-R")
        assert sent.returncode == 0, sent.stderr
        assert total.imported == 1
        assert stored(env, ds.SOPInstanceUID).SOPClassUID == "1.2.840.10008.5.1.4.1.1.6"
