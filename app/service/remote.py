"""The clients' services that read or write files, or decode images, here (as this OS account):
imported when one is first used, so that a client which only lists or asks (`custodian whoami`,
`studies`) loads no DICOM, NumPy, zip or media code (:mod:`app.service.client`)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.audit.reconcile import Reconciliation
from app.errors import CustodianError, UsageError
from app.imaging.pixels import Decoded, FrameInfo, decode_frames, native_buffer, native_decoded, native_size
from app.imaging.series import SeriesFrames, SeriesImages
from app.media.disclosures import ExportRequest, ExportResult
from app.media.outside import Reconcile, Survey, open_media, survey
from app.media.writer import OutputFile
from app.security.users import Session
from app.service.codec import decode, encode
from app.service.offer import RemoteService
from app.service.readahead import ReadAhead, fetchers
from app.store.contingency import BackupResult
from app.store.importer import Unreadable, read_source
from app.store.limits import IntakeLimits
from app.store.records import ImportReport, Rejection
from app.store.sources import iter_sources

if TYPE_CHECKING:
    from app.service.client import RemoteReading, RemoteVault

IMPORT_BATCH = 48 * 1024 * 1024  # bytes of files per call (the service bounds a request)


def open_series(reading: RemoteReading, vault: RemoteVault, session: Session, series_uid: str
                ) -> SeriesImages:
    """A series opened in the service (audited there), its images fetched as the viewer needs them,
    a few ahead in the direction it reads (:mod:`app.service.readahead`), decoded here."""
    frames: SeriesFrames = reading.open_frames(session, series_uid)
    images = frames.images(lambda info: decode_frames(info, ahead.get(info.sop_uid)),
                           partial(_together, vault, session, series_uid))
    if reading.pool is None:
        reading.pool = fetchers()
    ahead = ReadAhead([info.sop_uid for info in images.instances], partial(reading.frame_data, session),
                      reading.pool)
    return images


def _together(vault: RemoteVault, session: Session, series_uid: str, infos: list[FrameInfo]) -> list[Decoded]:
    """Many native images in one answer (a volume), read into one buffer their arrays share."""
    sizes = [native_size(info) for info in infos]
    pixels = native_buffer(sum(sizes))
    vault.channel.read_into("/v1/pixels", {"token": vault.token_of(session), "series_uid": series_uid,
                                           "sop_uids": [info.sop_uid for info in infos]}, pixels)
    return [native_decoded(info, pixels[end - size:end])
            for info, size, end in zip(infos, sizes, itertools.accumulate(sizes), strict=True)]


class RemoteIntake(RemoteService):
    """Intake: files and media are read here, as this OS account (the service cannot read them),
    within the site's intake limits, and sent a batch at a time (the service applies the limits
    again to what it is sent)."""

    def import_paths(self, session: Session, paths: list[Path], progress: Any = None) -> ImportReport:
        report = ImportReport()
        for batch, unreadable in _batches(_readers(paths, self._limits())):
            report.rejected.extend(unreadable)
            if batch:
                _add(report, self.import_bytes(session, batch))
        return report

    def survey_media(self, session: Session, path: Path, passphrase: str | None = None) -> Survey:
        limits = self._limits()
        found = survey(open_media(path, passphrase, limits), limits)
        self.surveyed(session, path.name, found)
        return found

    def import_media(self, session: Session, path: Path, passphrase: str | None = None,
                     reconcile: Reconcile | None = None, progress: Any = None) -> ImportReport:
        report = ImportReport()
        for batch, unreadable in _batches(open_media(path, passphrase, self._limits())):
            report.rejected.extend(unreadable)
            if batch:
                _add(report, self.import_media_items(session, batch, reconcile))
        return report

    def _limits(self) -> IntakeLimits:
        return IntakeLimits.of(self._vault.policy)


def _add(report: ImportReport, part: ImportReport) -> None:
    report.imported += part.imported
    report.duplicates += part.duplicates
    report.rejected.extend(part.rejected)
    report.studies |= part.studies
    report.warnings.extend(part.warnings)


def _readers(paths: list[Path], limits: IntakeLimits) -> list[tuple[str, Callable[[], bytes]]]:
    return [(str(source.path), partial(read_source, source, limits))
            for source in iter_sources(paths, limits)]


def _batches(entries: list[tuple[str, Callable[[], bytes]]]
             ) -> Iterator[tuple[list[tuple[str, bytes]], list[Rejection]]]:
    """Files read a batch at a time (bounded in memory); those that cannot be read, with why."""
    batch: list[tuple[str, bytes]] = []
    unreadable: list[Rejection] = []
    size = 0
    for label, read in entries:
        try:
            data = read()
        except (Unreadable, OSError, CustodianError) as exc:
            unreadable.append(Rejection(label, str(exc)))
            continue
        if batch and size + len(data) > IMPORT_BATCH:
            yield batch, unreadable
            batch, unreadable, size = [], [], 0
        batch.append((label, data))
        size += len(data)
    yield batch, unreadable


class RemoteDisclosure(RemoteService):
    """Export: the service makes the encrypted media in its own folder and records the disclosure;
    the media is fetched here, as this OS account, into the file asked for."""

    def export(self, session: Session, request: ExportRequest, code: str, progress: Any = None
               ) -> ExportResult:
        result: ExportResult = _spooled(
            self._vault, "/v1/export", request.out, ExportResult,
            {"token": self._vault.token_of(session), "request": encode(request), "code": code},
            lambda made: f"The media was made and disclosure #{made.disclosure_id} recorded")
        return result


class RemoteTrail(RemoteService):
    """Audit reconciliation: the repository's file is read here, as this OS account, and streamed
    to the service, which compares it with the chain."""

    def reconcile(self, session: Session, central: Path) -> Reconciliation:
        try:
            with central.open("rb") as source:
                token, size = self._vault.token_of(session), os.fstat(source.fileno()).st_size
                answer = self._vault.channel.upload("/v1/reconcile", source, size, token)
        except OSError as exc:
            raise UsageError(f"Could not read the repository's file: {exc.strerror}.") from None
        result: Reconciliation = decode(answer, Reconciliation)
        return result


class RemoteAdmin(RemoteService):
    """Backup: the service makes the sealed file in its own folder; it is fetched here, as this
    OS account, into the file asked for."""

    def backup(self, session: Session, out: Path, passphrase: str) -> BackupResult:
        result: BackupResult = _spooled(
            self._vault, "/v1/backup", out, BackupResult,
            {"token": self._vault.token_of(session), "out": str(out), "passphrase": passphrase},
            lambda made: "The backup was made and recorded")
        return result


def _spooled(vault: RemoteVault, route: str, out: Path, kind: type[Any], body: dict[str, Any],
             done: Callable[[Any], str]) -> Any:
    """A file the service makes in its spool (media, a backup), fetched into ``out``, which exists
    only once it arrived whole."""
    with OutputFile(out) as output:  # refuses an existing name before anything is made
        made = vault.channel.request("POST", route, body)
        result = decode(made["made"], kind)
        try:
            vault.channel.fetch(f"/v1/media/{made['media']}", output.file)
            if output.sha256()[0] != result.sha256:
                raise CustodianError("The file arrived damaged.")
            output.publish()
        except CustodianError as exc:
            raise CustodianError(f"{done(result)}, but it could not be fetched from the workstation "
                                 f"service: {exc}") from None
    return result


KINDS: dict[str, type[RemoteService]] = {"intake": RemoteIntake, "disclosure": RemoteDisclosure,
                                         "trail": RemoteTrail, "admin": RemoteAdmin}
