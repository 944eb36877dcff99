"""Media that every DICOM reader accepts, judged by DCMTK and dicom3tools, not by our own reading.

Every local pydicom test file the vault accepts (every transfer syntax it stores: big endian,
deflate, implicit VR, JPEG, JPEG-LS, JPEG 2000, RLE, files without a Part 10 header, SR, RT) goes
onto one export; the media must be the General Purpose profile (Part 10, Explicit VR Little
Endian) and the validators may report only what the source files already carried.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from app.media.disclosures import ExportResult, Purpose, RecipientKind
from app.security.roles import Role
from tests.conftest import make_env
from tests.media.conftest import MediaEnv
from tests.media.test_deid import TEST_FILES, _normalised
from tests.media.test_export import unzip

# Their compressed streams are damaged: the vault keeps them as received, no decoder reads them.
BROKEN = ("JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm")
LOSSLESS = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless,
            RLELossless, HTJ2KLossless,
            HTJ2KLosslessRPCL}


@dataclass
class Exported:
    root: Path
    result: ExportResult
    sources: dict[str, Path]  # SOP Instance UID -> the test file the vault stored it from

    def files(self) -> list[Path]:
        return sorted(p for p in (self.root / "DICOM").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    for tool in ("dcmftest", "dcmmkdir", "dciodvfy", "dcentvfy", "7z"):
        assert shutil.which(tool), f"{tool} is needed (installer/setup.sh installs it)"
    tmp = tmp_path_factory.mktemp("profile")
    env = make_env(tmp / "home")
    env.add("tech", Role.TECHNOLOGIST)
    env.add("lib", Role.LIBRARIAN)
    sources: dict[str, Path] = {}
    studies: set[str] = set()
    for path in sorted(TEST_FILES.glob("*.dcm")):  # one at a time: which file each instance came from
        report = env.vault.intake.import_paths(env.login("tech"), [path])
        if report.imported:
            sources[str(_header(path).SOPInstanceUID)] = path
            studies |= report.studies
    out = tmp / "out"
    out.mkdir()
    media = MediaEnv(env, "", set(), out)
    result = media.export(media.request(studies=tuple(sorted(studies)), recipient="Dr Who",
                                        recipient_kind=RecipientKind.PROVIDER, purpose=Purpose.TREATMENT))
    assert unzip(out / "media.zip", result.passphrase, tmp / "open").returncode == 0
    yield Exported(tmp / "open", result, sources)
    env.vault.close()


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def _run(*command: str) -> str:
    run = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=300, check=False)
    return run.stdout + run.stderr


def _errors(*paths: Path, tool: str = "dciodvfy") -> set[str]:
    return {_normalised(line.strip()) for line in _run(tool, *map(str, paths)).splitlines()
            if line.startswith("Error")}


def _source_errors(path: Path, tmp: Path) -> set[str]:
    """What dciodvfy finds in a source; a deflated one is inflated first, by DCMTK's dcmconv
    (dciodvfy cannot read into deflated data, so it would see nothing past the meta header)."""
    if _header(path).file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return _errors(path)
    inflated = tmp / path.name
    _run("dcmconv", "+te", str(path), str(inflated))
    return _errors(inflated)


def test_every_file_is_part10_in_explicit_vr_little_endian(exported: Exported) -> None:
    files = exported.files()
    assert len(files) == exported.result.instances == len(exported.sources) - len(BROKEN)
    syntaxes = {str(_header(p).file_meta.get("TransferSyntaxUID")) for p in exported.sources.values()}
    assert len(syntaxes) >= 10, f"the sources cover the transfer syntaxes: {sorted(syntaxes)}"
    for path in files:
        assert _run("dcmftest", str(path)).startswith("yes:"), path
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_pixels_are_transcoded_without_loss(exported: Exported) -> None:
    """Lossless sources decode to the same values; a lossy one stays marked lossy, never worse."""
    compared = 0
    for path in exported.files():
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            continue
        source = pydicom.dcmread(exported.sources[str(ds.SOPInstanceUID)], force=True)
        syntax = source.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax not in LOSSLESS:
            assert ds.get("LossyImageCompression", "01") == "01"
            continue
        if "YBR" in source.get("PhotometricInterpretation", ""):
            continue  # decoded to RGB: the same colours in another space
        try:
            expected = source.pixel_array
        except (ValueError, AttributeError, NotImplementedError):  # pydicom cannot decode this source
            continue
        assert np.array_equal(ds.pixel_array, expected), path
        compared += 1
    assert compared >= 10


def test_a_damaged_instance_is_left_out_with_its_reason_and_the_rest_goes(exported: Exported) -> None:
    broken = {str(_header(TEST_FILES / name).SOPInstanceUID) for name in BROKEN}
    assert broken <= set(exported.sources)
    assert {uid for uid, _ in exported.result.left_out} == broken
    assert all("transfer syntax" in why for _, why in exported.result.left_out)


def test_dcmmkdir_builds_a_general_purpose_fileset_from_the_media(exported: Exported, tmp_path: Path) -> None:
    """DCMTK makes its own DICOMDIR of the files under the General Purpose profile, inventing
    the record keys a file lacks (+I); what it still refuses must be missing from the source too."""
    output = _run("dcmmkdir", "-Pgp", "+I", "+r", "+id", str(exported.root), "+D",
                  str(tmp_path / "DICOMDIR"), "DICOM")
    assert (tmp_path / "DICOMDIR").exists(), output
    refused = re.findall(r"^E: required attribute (\w+) \(([0-9a-f]{4}),([0-9a-f]{4})\) (?:empty|missing) "
                         r"in file: (\S+)$", output, re.MULTILINE | re.IGNORECASE)
    other = [line for line in output.splitlines() if line.startswith(("E:", "F:"))]
    assert len(other) == len(refused), other
    for keyword, group, element, name in refused:
        source = _header(exported.sources[str(_header(exported.root / name).SOPInstanceUID)])
        tag = int(group + element, 16)
        assert tag not in source or source[tag].value in (None, "", b""), (keyword, name)


def test_dciodvfy_finds_nothing_the_source_did_not_carry(exported: Exported, tmp_path: Path) -> None:
    added = {}
    for path in exported.files():
        uid = str(_header(path).SOPInstanceUID)
        new = _errors(path) - _source_errors(exported.sources[uid], tmp_path)
        if new:
            added[exported.sources[uid].name] = new
    assert added == {}


def test_the_dicomdir_is_valid_but_for_what_the_sources_carry(exported: Exported, tmp_path: Path) -> None:
    carried = set().union(*(_source_errors(p, tmp_path) for p in exported.sources.values()))
    assert _errors(exported.root / "DICOMDIR") - carried == set()


def test_dcentvfy_finds_no_inconsistency_the_sources_did_not_have(exported: Exported) -> None:
    """Patients, studies and series agree across the files (dicom3tools aborts on some 32-bit
    RT Dose files whatever their source: those are left to dciodvfy)."""
    pairs = [(p, exported.sources[str(_header(p).SOPInstanceUID)]) for p in exported.files()]
    pairs = [(p, source) for p, source in pairs if "Assertion" not in _run("dcentvfy", str(source))]
    files, sources = [p for p, _ in pairs], [source for _, source in pairs]
    assert len(files) >= len(exported.files()) - 3
    assert _errors(*files, tool="dcentvfy") - _errors(*sources, tool="dcentvfy") == set()

