"""Fuzz targets: what the workstation does with hostile or damaged input, one input at a time.

Each target takes bytes (a mutation of a real input) and answers accepted or refused with the
plain reason. Anything else it raises is a crash: the finding. The CI subset (tests/fuzz/
test_fuzz.py) and the long runner (``python -m tests.fuzz.run``) share these targets and the
mutations, so the figures in the README come from the same code the suite checks.
"""

from __future__ import annotations

import atexit
import io
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyzipper
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pydicom.data import get_testdata_file

from app.audit.dicom_xml import HOSTNAME
from app.audit.reconcile import reconcile
from app.audit.syslog import checkpoint_message, event_message
from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.imaging.pixels import decode_frames
from app.imaging.series import SeriesImages
from app.media.disclosures import Delivery, ExportRequest, IdentityCheck, MediaKind, Purpose, RecipientKind
from app.net import commands, pdu, requestor
from app.net.inbound import negotiate
from app.net.requestor import Proposal
from app.net.scp import COMMITMENT, SUPPORTED, UNCOMPRESSED
from app.security import managed_policy
from app.security.roles import Role
from app.security.sessions import Session
from app.store.ingest import DicomDirectory, Rejected, parse
from app.vault import Vault
from tests.conftest import VaultEnv, make_env, study_bytes
from tests.imaging.frames import info_of

# Real inputs the mutations start from: pydicom's own files (compressed, big-endian, broken) and
# the demo's CT.
SEED_FILES = ("CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm",
              "SC_rgb_jpeg_dcmtk.dcm", "MR_small_bigendian.dcm", "examples_palette.dcm",
              "examples_overlay.dcm", "rtdose.dcm", "ExplVR_BigEndNoMeta.dcm", "MR_truncated.dcm")


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    reason: str = ""


@cache
def dicom_seeds() -> tuple[bytes, ...]:
    seeds = []
    for name in SEED_FILES:
        path = get_testdata_file(name)
        if path:
            seeds.append(Path(path).read_bytes())
    seeds.append(to_bytes(ct_study(Patient("FUZZ-1", "Fuzz^Felix"), slices=1, size=32)[0]))
    return tuple(seeds)


def mutate(data: bytes, rng: random.Random, edits: int) -> bytes:
    """Byte flips, overwritten lengths, cuts and inserted junk: what damaged media and hostile
    senders produce. Biased to the header, where the parser's decisions are."""
    out = bytearray(data)
    for _ in range(edits):
        if not out:
            break
        where = rng.randrange(len(out)) if rng.random() < 0.5 else rng.randrange(min(len(out), 1024))
        kind = rng.choices(range(5), weights=(40, 25, 5, 15, 15))[0]
        if kind == 0:
            out[where] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[where:where + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xfe\xff\xff\x7f",
                                               rng.randbytes(4)])
        elif kind == 2:
            del out[where:]
        elif kind == 3:
            out[where:where] = rng.randbytes(rng.randrange(1, 64))
        else:
            del out[where:where + rng.randrange(1, 64)]
    return bytes(out)


def dicom_import(data: bytes) -> Outcome:
    """What the importer, the storage SCP and outside media all do first: parse for the index."""
    try:
        parse(data)
    except Rejected as exc:
        return Outcome(False, str(exc))
    except DicomDirectory:
        return Outcome(False, "a DICOMDIR")
    return Outcome(True)


CT = "1.2.840.10008.5.1.4.1.1.2"


def upper_layer_seeds() -> tuple[bytes, ...]:
    """An association request proposing storage (with a role) and a C-STORE's P-DATA-TF."""
    store = commands.write({commands.COMMAND_FIELD: commands.C_STORE_RQ, commands.MESSAGE_ID: 1,
                            commands.AFFECTED_SOP_CLASS: CT, commands.AFFECTED_SOP_INSTANCE: "1.2.3.4",
                            commands.DATA_SET_TYPE: 0})
    return (requestor.request("CUSTODIAN", "FUZZER", [Proposal(CT, UNCOMPRESSED, as_scp=True)]),
            b"".join(pdu.p_data(1, store, command=True, max_length=0) +
                     pdu.p_data(1, b"x" * 64, command=False, max_length=32)))


def upper_layer(data: bytes) -> Outcome:
    """PDUs as the storage SCP takes them apart: an association request negotiated, or P-DATA's
    fragments and command sets read."""
    try:
        if data[:1] == bytes((pdu.ASSOCIATE_RQ,)):
            negotiate(pdu.parse_request(data[6:]), SUPPORTED, frozenset({COMMITMENT}))
        else:
            at = 0
            while at + 6 <= len(data):  # (each PDU by the length its header declares, as it is read)
                length = int.from_bytes(data[at + 2:at + 6], "big")
                for _, control, fragment in pdu.pdvs(data[at + 6:at + 6 + length]):
                    if control == 0x03:
                        commands.read(fragment).field  # noqa: B018
                at += 6 + length
    except pdu.ProtocolError as exc:
        return Outcome(False, str(exc))
    return Outcome(True)


def dicom_display(data: bytes) -> Outcome:
    """An accepted file as the viewer shows it: decoded and rendered through the pixel pipeline."""
    try:
        info = info_of(data)
    except (Rejected, DicomDirectory) as exc:
        return Outcome(False, str(exc))
    if info.rows is None:
        return Outcome(False, "no pixel data")
    try:
        SeriesImages([info], lambda i: decode_frames(i, data)).render(0)
    except CustodianError as exc:
        return Outcome(False, str(exc))
    return Outcome(True)


@cache
def _site() -> tuple[bytes, Path]:
    key = Ed25519PrivateKey.generate()
    folder = Path(tempfile.mkdtemp(prefix="custodian-fuzz-site-"))
    atexit.register(shutil.rmtree, folder, True)
    public = folder / "site-key.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    settings = {"inactivity_seconds": 120, "visible_fields": {"technologist": ["patient ID"]}}
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    signed = managed_policy.sign(settings, private)
    return signed, public


def policy_seed() -> bytes:
    return _site()[0]


def site_policy(data: bytes) -> Outcome:
    """A site policy file as the workstation reads it at every start: verified, then taken apart."""
    _, public = _site()
    fd, name = tempfile.mkstemp(prefix="custodian-fuzz-policy-")
    try:
        os.write(fd, data)
        os.close(fd)
        managed = managed_policy.load_file(Path(name), public)
        managed_policy.split(managed.settings)
    except CustodianError as exc:
        return Outcome(False, str(exc))
    finally:
        os.unlink(name)
    return Outcome(True)


@dataclass(frozen=True)
class _Media:
    """A workstation that exported one small study to each kind of media (the seeds) and that
    imports, surveys and reconciles the mutations."""

    env: VaultEnv
    folder: Path
    zip: bytes
    iso: bytes
    dicomdir: bytes  # the DICOMDIR of the unpacked media, beside its files
    passphrases: dict[str, str]  # each export has its own


@cache
def _media() -> _Media:
    folder = Path(tempfile.mkdtemp(prefix="custodian-fuzz-media-"))
    atexit.register(shutil.rmtree, folder, True)
    env = make_env(folder / "home")
    atexit.register(env.vault.close)  # (runs first: last registered)
    env.add("lib", Role.LIBRARIAN)
    env.add("po", Role.PRIVACY_OFFICER)
    env.add("tech", Role.TECHNOLOGIST)  # who imports (a librarian imports outside media only)
    lib = env.login("lib")
    report = env.vault.intake.import_bytes(env.login("tech"),
                                           study_bytes(Patient("FUZZ-M", "Media^Mona"), slices=3, size=16))
    made = {}
    for kind in (MediaKind.ZIP, MediaKind.ISO):
        out = folder / f"seed.{kind.value}"
        request = ExportRequest(tuple(report.studies), RecipientKind.PATIENT, "Mona Media",
                                Purpose.PATIENT_REQUEST, IdentityCheck.PHOTO_ID, Delivery.HANDED_OVER,
                                kind, out)
        result = env.vault.disclosure.export(lib, request, env.accounts["lib"].codes.next())
        made[kind] = (out.read_bytes(), result)
    unpacked = folder / "unpacked"
    with pyzipper.AESZipFile(io.BytesIO(made[MediaKind.ZIP][0])) as archive:
        archive.setpassword(made[MediaKind.ZIP][1].passphrase.encode())
        archive.extractall(unpacked)
    return _Media(env, unpacked, made[MediaKind.ZIP][0], made[MediaKind.ISO][0],
                  (unpacked / "DICOMDIR").read_bytes(),
                  {f"mutated.{kind.value}": result.passphrase for kind, (_, result) in made.items()})


def _survey_and_import(path: Path, passphrase: str | None = None) -> Outcome:
    """Outside media as the film library reads it: surveyed, then imported (beside the studies
    already in the vault: nothing stored before may be lost)."""
    media = _media()
    lib = media.env.login("lib")
    try:
        found = media.env.vault.intake.survey_media(lib, path, passphrase)
        report = media.env.vault.intake.import_media(lib, path, passphrase)
    except CustodianError as exc:
        return Outcome(False, str(exc))
    return Outcome(bool(found.studies) and report.imported + report.duplicates > 0,
                   f"{len(report.rejected)} files refused")


def _media_file(name: str, data: bytes) -> Outcome:
    media = _media()
    path = media.folder.parent / name
    path.write_bytes(data)
    try:
        return _survey_and_import(path, media.passphrases[name])
    finally:
        path.unlink()


def media_zip(data: bytes) -> Outcome:
    return _media_file("mutated.zip", data)


def media_iso(data: bytes) -> Outcome:
    return _media_file("mutated.iso", data)


def media_dicomdir(data: bytes) -> Outcome:
    """A damaged DICOMDIR beside intact files: read as the index of the media."""
    media = _media()
    path = media.folder / "DICOMDIR"
    path.write_bytes(data)
    try:
        return _survey_and_import(path)
    finally:
        path.write_bytes(media.dicomdir)


def media_vault_damage() -> int:
    """Instances of the media targets' vault that no longer verify: must stay 0."""
    media = _media()
    return len(media.env.vault.admin.verify(media.env.login("po")).damaged)


@cache
def _central() -> tuple[VaultEnv, bytes]:
    """A workstation's trail, and the central repository's file of it as rsyslog writes it."""
    folder = Path(tempfile.mkdtemp(prefix="custodian-fuzz-central-"))
    atexit.register(shutil.rmtree, folder, True)
    env = make_env(folder / "home")
    atexit.register(env.vault.close)
    env.add("po", Role.PRIVACY_OFFICER)
    env.vault.trail.verify(env.login("po"))  # records of a few kinds: user added, logins, a check
    log = env.vault._gate._audit
    lines = [event_message(entry, HOSTNAME) for entry in log.entries()]
    lines.append(checkpoint_message(log.sign_head(log.entries()[-1]), HOSTNAME, log.key_id))
    return env, b"\n".join(lines)


def central_audit(data: bytes) -> Outcome:
    """The central repository's file as ``audit reconcile`` reads and compares it (against a trail
    the cases do not grow, so each costs the same)."""
    env, _ = _central()
    with env.vault._core.lock:
        result = reconcile(io.StringIO(data.decode("utf-8", "replace")), env.vault._gate._audit, 0, HOSTNAME)
    return Outcome(result.ok, "findings reported")


TARGETS: dict[str, tuple[Callable[[bytes], Outcome], Callable[[], tuple[bytes, ...]]]] = {
    "DICOM import (parse)": (dicom_import, dicom_seeds),
    "DICOM display (decode, render)": (dicom_display, dicom_seeds),
    "DICOM upper layer (association request, P-DATA)": (upper_layer, upper_layer_seeds),
    "signed site policy": (site_policy, lambda: (policy_seed(),)),
    "outside media: encrypted zip": (media_zip, lambda: (_media().zip,)),
    "outside media: CD image (ISO 9660)": (media_iso, lambda: (_media().iso,)),
    "outside media: DICOMDIR": (media_dicomdir, lambda: (_media().dicomdir,)),
    "central audit repository file (reconcile)": (central_audit, lambda: (_central()[1],)),
}


@dataclass(frozen=True)
class BatchResult:
    files: int
    imported: int
    refused: int
    duplicates: int
    damaged_after: int  # instances 'verify' finds damaged after the batch: must stay 0


def import_batch(vault: Vault, tech: Session, files: list[bytes]) -> BatchResult:
    """Mutated files imported together with intact ones: each one is imported or refused, none
    lost or half-written, and the whole vault still verifies."""
    report = vault.intake.import_bytes(tech, [(f"fuzz-{i}", data) for i, data in enumerate(files)])
    verified = vault.admin.verify(tech)
    return BatchResult(len(files), report.imported, len(report.rejected), report.duplicates,
                       len(verified.damaged))


def restore_mutated(backup_file: Path, data: bytes, passphrase: str, home: Path) -> Outcome:
    """A changed backup is refused and leaves no vault behind (a wrong restore is worse than none)."""
    changed = backup_file.with_name("mutated.backup")
    changed.write_bytes(data)
    try:
        Vault.restore(changed, home, passphrase, vault_passphrase=passphrase, use_keyring=False).close()
    except CustodianError as exc:
        if Vault.exists(home):
            raise AssertionError("a refused restore left a vault behind") from exc
        return Outcome(False, str(exc))
    return Outcome(True)
