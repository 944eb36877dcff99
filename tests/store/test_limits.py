"""Hostile input refused by the site's intake limits and by reading only regular files: special
files and links in folders, decompression bombs in zips and deflated data sets, hard links, and
the quarantine's room (issue 22, items 3 and 4). The measured figures come from
tests/stress/bombs.py (real ``custodian`` processes)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from app.demo.studies import Patient, ct_study, to_bytes
from app.errors import CustodianError
from app.media.outside import Reconcile
from app.store.importer import read_source
from app.store.limits import Unreadable
from app.store.records import ImportReport
from app.store.sources import iter_sources
from tests.conftest import VaultEnv
from tests.stress.bombs import MARKER, MiB, deflated_bomb, hard_link_iso, hostile_folder, zip_bomb

OUT = "a link that leads out of the folder chosen: not followed"


def _image(patient_id: str = "LIM-1") -> bytes:
    return to_bytes(ct_study(Patient(patient_id, "Limited^Lou"), slices=1, size=16)[0])


def _refused_in_audit(env: VaultEnv) -> int:
    rows = env.vault._core.query("SELECT json_extract(record, '$.detail.refused') FROM audit "
                                 "WHERE json_extract(record, '$.type') = 'quarantine'")
    return sum(int(r[0] or 0) for r in rows)


def _quarantined(env: VaultEnv) -> list[str]:
    return [Path(q.source).name for q in env.vault.intake.quarantined(env.login("tech"))]


@contextlib.contextmanager
def _unblocking(folder: Path) -> Iterator[None]:
    """On the way out, give any reader stuck opening a pipe under ``folder`` its end of file, so a
    regression fails the test instead of hanging the run."""
    try:
        yield
    finally:
        for pipe in folder.rglob("*"):
            if pipe.is_fifo():
                with contextlib.suppress(OSError):
                    os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


def _import(env: VaultEnv, paths: list[Path], within: float = 60) -> ImportReport:
    """The import on a thread: one that waits on a special file fails here instead of hanging."""
    tech, done = env.login("tech"), {}
    thread = threading.Thread(target=lambda: done.update(
        report=env.vault.intake.import_paths(tech, paths)), daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), "the import waited on a special file"
    return done["report"]


def test_special_files_and_links_are_skipped_with_their_reasons(env: VaultEnv, tmp_path: Path) -> None:
    folder = hostile_folder(tmp_path / "media")
    (folder / "sub").mkdir()
    (folder / "sub" / "IM0002.dcm").write_bytes(_image("LIM-2"))
    (folder / "sub" / "up.dcm").symlink_to("../IM0001.dcm")  # inside, followed once
    (folder / "inner").symlink_to("sub")
    (folder / "chain.dcm").symlink_to("same-image.dcm")
    (folder / "dangling.dcm").symlink_to("nothing-here.dcm")
    with _unblocking(folder):
        started = time.perf_counter()
        report = _import(env, [folder])
    reasons = {Path(r.path).name: r.reason for r in report.rejected}
    assert reasons == {
        "pipe.dcm": "not a regular file (a named pipe): skipped", "zero.dcm": OUT, "marker.dcm": OUT,
        "shadow.dcm": OUT, "elsewhere": OUT,
        "inner": "a link to a folder: not followed (its files are read where they are)",
        "chain.dcm": "a link to another link: not followed", "dangling.dcm": "a link whose target is missing"}
    assert (report.imported, report.duplicates) == (2, 0)  # each image once, under its own name or a link
    assert _quarantined(env) == []  # neither the marker nor /etc/shadow was read
    assert time.perf_counter() - started < 30


def test_special_files_chosen_by_name_are_skipped(env: VaultEnv, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")  # chosen by name: followed, and found a device
    with _unblocking(tmp_path):
        report = _import(env, [Path("/dev/zero"), pipe, tmp_path / "zero.dcm"])
    assert [r.reason for r in report.rejected] == ["not a regular file (a device): skipped",
                                                   "not a regular file (a named pipe): skipped",
                                                   "not a regular file (a device): skipped"]


def test_a_file_replaced_after_the_walk_is_refused_without_waiting(tmp_path: Path) -> None:
    """The walk decides before the vault is locked; what is read later must still be that file."""
    folder = tmp_path / "media"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        (folder / name).write_bytes(_image())
    sources = list(iter_sources([folder]))
    (folder / "a.dcm").unlink()
    os.mkfifo(folder / "a.dcm")
    (folder / "b.dcm").unlink()
    (folder / "b.dcm").symlink_to("/dev/zero")
    (folder / "new.dcm").write_bytes(_image())
    (folder / "new.dcm").replace(folder / "c.dcm")
    with _unblocking(folder):
        reasons = []
        for source in sources:
            with pytest.raises(Unreadable) as refused:
                read_source(source)
            reasons.append(str(refused.value))
    assert reasons == ["not a regular file (a named pipe): skipped",
                       "a link where a file was expected: not followed",
                       "the file was replaced after the folder was read: not imported"]


def test_hard_links_in_a_folder_are_read_once(env: VaultEnv, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "junk0.bin").write_bytes(os.urandom(100_000))
    for n in range(1, 20):
        os.link(folder / "junk0.bin", folder / f"junk{n}.bin")
    report = _import(env, [folder])
    assert [r.reason for r in report.rejected] == ["not a DICOM file"]
    assert _quarantined(env) == ["junk0.bin"]


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_zip_bomb_is_refused_member_by_member_unread(env: VaultEnv, tmp_path: Path) -> None:
    bomb = zip_bomb(tmp_path / "bomb.zip", members=2, size=32 * MiB)
    with zipfile.ZipFile(bomb, "a") as archive:
        archive.writestr("IMAGES/GOOD", _image())
    report = env.vault.intake.import_media(env.login("tech"), bomb, None, Reconcile(outside_issuer="Away"))
    assert report.imported == 1
    assert [r.reason for r in report.rejected] == [
        "it would inflate to more than 200 times its compressed size (site policy intake_expansion_max): "
        "refused as a decompression bomb"] * 2
    assert _quarantined(env) == [] and _refused_in_audit(env) == 2


def _point_at_first(path: Path, name: bytes) -> None:
    """Make the central directory entry of member ``name`` point at the first member's data."""
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(name)] != name:
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<L", data, entry + 42, 0)
    path.write_bytes(bytes(data))


def test_overlapping_and_bzip2_members_are_refused_unread(env: VaultEnv, tmp_path: Path) -> None:
    overlapping = _zip(tmp_path / "overlap.zip", {"A": os.urandom(5000), "B": os.urandom(5000)})
    _point_at_first(overlapping, b"B")
    bzip2 = _zip(tmp_path / "bzip2.zip", {"C": _image()}, zipfile.ZIP_BZIP2)
    reasons = []
    for media in (overlapping, bzip2):
        report = env.vault.intake.import_media(env.login("tech"), media, None,
                                               Reconcile(outside_issuer="Away"))
        reasons += [(r.path.rsplit(":", 1)[1], r.reason) for r in report.rejected]
    assert reasons == [("A", "its packed data overlaps another member's: refused as a zip bomb"),
                       ("B", "its packed data overlaps another member's: refused as a zip bomb"),
                       ("C", "it is packed with a method other than stored or deflated: refused unread")]
    assert _quarantined(env) == []


def test_an_import_larger_than_the_site_allows_is_refused_before_anything_is_read(
        env: VaultEnv, tmp_path: Path) -> None:
    admin, tech = env.login("admin"), env.login("tech")
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(5):
        (folder / f"IM{n}.dcm").write_bytes(_image(f"MANY-{n}"))
    env.vault.admin.set_policy(admin, "intake_max_files", "3")
    with pytest.raises(CustodianError, match="more than 3 files"):
        env.vault.intake.import_paths(tech, [folder])
    env.vault.admin.set_policy(admin, "intake_max_files", "100")
    env.vault.admin.set_policy(admin, "intake_max_mb", "1")
    stored = _zip(tmp_path / "big.zip", {"A": os.urandom(MiB), "B": os.urandom(MiB)}, zipfile.ZIP_STORED)
    with pytest.raises(CustodianError, match="holds 2 MB, more than the 1 MB one import may take"):
        env.vault.intake.import_media(tech, stored, None, Reconcile(outside_issuer="Away"))
    assert env.vault.reading.studies(env.login("rad")) == [] and _quarantined(env) == []


def test_a_file_larger_than_the_site_allows_is_refused_unread(env: VaultEnv, tmp_path: Path) -> None:
    env.vault.admin.set_policy(env.login("admin"), "intake_file_max_mb", "1")
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(2 * MiB))
    (folder / "IM1.dcm").write_bytes(_image())
    report = _import(env, [folder])
    assert report.imported == 1
    assert [(Path(r.path).name, r.reason) for r in report.rejected] == [
        ("big.bin", "it is larger than the 1 MB one file may take (site policy intake_file_max_mb)")]
    assert _quarantined(env) == [] and _refused_in_audit(env) == 1


def test_the_quarantine_keeps_no_more_than_its_room_and_each_file_once(env: VaultEnv, tmp_path: Path) -> None:
    env.vault.admin.set_policy(env.login("admin"), "quarantine_max_mb", "1")
    folder = tmp_path / "junk"
    folder.mkdir()
    for n in range(1, 4):
        (folder / f"j{n}.bin").write_bytes(os.urandom(400_000))
    shutil.copy(folder / "j1.bin", folder / "j4.bin")
    report = _import(env, [folder])
    assert [r.reason for r in report.rejected] == [
        "not a DICOM file", "not a DICOM file",
        "not a DICOM file; not kept for inspection: the quarantine is full (site policy quarantine_max_mb)",
        "not a DICOM file (the same bytes as a file kept in the quarantine by this import)"]
    assert _quarantined(env) == ["j1.bin", "j2.bin"] and _refused_in_audit(env) == 1


def test_a_deflated_bomb_is_refused_as_it_inflates(env: VaultEnv, tmp_path: Path) -> None:
    bomb = deflated_bomb(tmp_path / "bomb.dcm", pixel_bytes=64 * MiB)
    legit = tmp_path / "deflated.dcm"
    shutil.copy(get_testdata_file("image_dfl.dcm"), legit)
    why = ("it would inflate to more than 200 times its compressed size (site policy "
           "intake_expansion_max): refused as a decompression bomb")
    report = _import(env, [bomb, legit])
    assert report.imported == 1 and [r.reason for r in report.rejected] == [why]
    received = env.vault.intake.import_bytes(env.login("tech"), [("sent", bomb.read_bytes())])
    assert [r.reason for r in received.rejected] == [why]
    assert _quarantined(env) == [] and _refused_in_audit(env) == 2


def test_a_cd_image_of_hard_links_is_read_once(env: VaultEnv, tmp_path: Path) -> None:
    image = hard_link_iso(tmp_path / "links.iso", links=20, size=MiB)
    report = env.vault.intake.import_media(env.login("tech"), image, None, Reconcile(outside_issuer="Away"))
    assert [r.reason for r in report.rejected] == ["not a DICOM file"]
    assert len(_quarantined(env)) == 1


def test_a_cd_image_whose_files_overlap_is_refused(env: VaultEnv, tmp_path: Path) -> None:
    """Two files whose extents overlap without being the same (a crafted image, not hard links)."""
    import pycdlib

    image = pycdlib.PyCdlib()
    image.new(interchange_level=1)
    for name, size in (("/A.BIN;1", 8 * 2048), ("/B.BIN;1", 2 * 2048)):
        image.add_fp(io.BytesIO(os.urandom(size)), size, name)
    path = tmp_path / "crafted.iso"
    image.write(str(path))
    image.close()
    data = bytearray(path.read_bytes())
    a, b = (data.index(name) - 33 for name in (b"A.BIN;1", b"B.BIN;1"))
    start = struct.unpack_from("<L", data, a + 2)[0] + 3  # B now starts inside A
    struct.pack_into("<L", data, b + 2, start)
    struct.pack_into(">L", data, b + 6, start)
    path.write_bytes(bytes(data))
    report = env.vault.intake.import_media(env.login("tech"), path, None, Reconcile(outside_issuer="Away"))
    assert {r.reason for r in report.rejected} == {
        "its data overlaps another file's on the CD image: refused as a crafted image"}
    assert len(report.rejected) == 2 and _quarantined(env) == []


def test_reading_a_marked_file_outside_the_folder_needs_choosing_it(tmp_path: Path) -> None:
    """The marked file a link pointed at is readable when chosen by name: the walk, not the
    permissions, kept it out."""
    folder = hostile_folder(tmp_path / "media")
    with _unblocking(folder):
        marked = list(iter_sources([folder / "marker.dcm"]))
    assert read_source(marked[0]).startswith(MARKER)
