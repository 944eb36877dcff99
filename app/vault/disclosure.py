"""Disclosure: encrypted media with its disclosure record, the accounting of disclosures, and
the business associate agreements an export to one needs."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pydicom

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError, NotPermitted
from app.imaging.pixels import decode_frames
from app.imaging.series import SeriesImages
from app.imaging.tags import read_attributes
from app.media import dicomdir, profile
from app.media.agreements import Agreement, AgreementBook
from app.media.deid import Deidentifier, may_carry_burnt_in
from app.media.dicomdir import Listed, file_ids
from app.media.disclosures import (
    RETENTION_YEARS,
    DisclosedStudy,
    Disclosure,
    DisclosureBook,
    ExportRequest,
    ExportResult,
    RecipientKind,
    new_serial,
)
from app.media.passphrase import new_passphrase
from app.media.view_copy import ViewCopy, png
from app.media.writer import OutputFile, readme, write_media
from app.security.roles import Action
from app.store.books import ExportRow, StudyBook
from app.store.importer import Entry, Progress
from app.vault.accounts import AccountService
from app.vault.gate import Access, Gate, Service, gated

Load = Callable[[], bytes]


def media_patient_ids(rows: list[ExportRow], serial: str) -> dict[int, str]:
    """Patient ID on the media for each patient record of an export: its own, or for a patient
    without one an ID unique to this media that the disclosure record keeps (the media serial and
    a number), so two such patients never share a record there."""
    ids: dict[int, str] = {}
    without = 0
    for r in rows:
        if r.key in ids:
            continue
        if not r.patient_id:
            without += 1
        ids[r.key] = r.patient_id or f"{serial}-{without}"
    return ids


def _deidentified(deid: Deidentifier, load: Load, patient: str) -> bytes:
    return profile.for_media(deid.dataset(load(), patient))


def _on_media(load: Load, patient_id: str | None) -> bytes:
    return profile.for_media(load(), patient_id)


class DisclosureService(Service):
    def __init__(self, gate: Gate, accounts: AccountService) -> None:
        super().__init__(gate)
        self._accounts = accounts

    @gated(Action.EXPORT)
    def export(self, door: Access, request: ExportRequest, code: str,
               progress: Progress | None = None, *, written_to: Path | None = None) -> ExportResult:
        """Encrypted media for ``request`` with its disclosure record; every check runs before a
        byte is written, so a refused export leaves nothing behind. ``written_to``: where the media
        is made when the workstation service hands it on to a client, which puts it at
        ``request.out`` (the place recorded)."""
        assert door.session is not None
        _settle_all(door)
        with door.store.reading() as conn:
            rows = StudyBook(conn).export_rows(request.studies)
        patients = tuple(sorted({r.reference for r in rows}))

        refuse = partial(_refused, door, request, patients)
        missing = set(request.studies) - {r.study_uid for r in rows}
        if missing:
            raise refuse(CustodianError(f"{len(missing)} of the chosen studies are not in the cache."))
        records: dict[tuple[str, str], set[int]] = {}
        for r in rows:
            if r.patient_id:
                records.setdefault((r.patient_id, r.issuer), set()).add(r.key)
        if any(len(keys) > 1 for keys in records.values()):
            raise refuse(CustodianError(
                "Export refused: the chosen studies name different patients (names or birth dates differ) "
                "under the same Patient ID. Reconcile them first, or put them on separate media."))
        for study_uid in request.studies:
            door.check_restriction(study_uid)
        policy = door.policy
        size = sum(r.size for r in rows)
        if policy.export_max_mb and size > policy.export_max_mb * 1024 * 1024:
            raise refuse(NotPermitted(f"Export refused: {size / 2**20:.0f} MB is more than the site's limit "
                                      f"of {policy.export_max_mb} MB per export."))
        if request.purpose.value in policy.deidentify_purposes.split(",") and request.deidentify is None:
            raise refuse(NotPermitted(f"Export refused: the site requires de-identification for "
                                      f"{request.purpose.value} (--deidentify)."))
        if request.recipient_kind is RecipientKind.BUSINESS_ASSOCIATE:
            try:
                with door.store.reading() as conn:
                    AgreementBook(conn).require(request.recipient, datetime.now(UTC).date())
            except CustodianError as exc:
                raise refuse(exc) from None
        output = OutputFile(written_to or request.out)  # refuses an existing name before anything is written
        disclosure_id: int | None = None
        try:
            self._accounts.step_up(door.session, code)
            passphrase, serial = new_passphrase(), new_serial()
            deid = Deidentifier(request.deidentify) if request.deidentify is not None else None
            ids = media_patient_ids(rows, serial)
            rows, loads, left_out = _media_loads(door, rows, ids, deid)
            if not rows:
                raise refuse(CustodianError(f"Export refused: none of the chosen instances can be put on "
                                            f"media ({left_out[0][1]})."))
            entries = _media_entries(rows, loads, ids, serial, deid, policy.ae_title)
            sha256, written = write_media(output, request.media, passphrase, entries,
                                          readme(serial, policy.ae_title, inside=False),
                                          lambda done: progress(done, len(entries)) if progress else None)
            with door.store.transaction() as conn:
                disclosure_id = DisclosureBook(conn).open_pending(
                    request, serial, door.actor, len(rows), written, sha256, _disclosed_studies(rows, ids))
            output.publish()
        except BaseException as exc:
            output.close()
            if disclosure_id is not None:
                _settle(door, disclosure_id, made=False)
            if isinstance(exc, OSError):
                raise CustodianError(f"The media could not be written: {exc.strerror or exc}.") from None
            raise
        output.close()
        _settle(door, disclosure_id, made=True)
        return ExportResult(request.out, sha256, disclosure_id, serial, len(rows), written, passphrase,
                            len(deid.flagged) if deid else 0, tuple(left_out))

    @gated(Action.COPY_VIEW)
    def copy_view(self, door: Access, copy: ViewCopy, code: str) -> bytes:
        """A displayed image as PNG bytes, saved at ``copy.out`` or handed back for the clipboard,
        recorded as a disclosure with its Export event once the reader's authenticator code is
        checked. A de-identified copy of pixels that may carry patient details is refused."""
        assert door.session is not None
        with door.store.reading() as conn:
            frames = StudyBook(conn).frames(copy.series_uid)
        infos = [info for info in frames.frames if info.sop_uid == copy.sop_uid] if frames else []
        if not infos:
            raise CustodianError("This image is not in the cache.")
        images = SeriesImages(infos, lambda info: decode_frames(info, door.store.plaintext(
            info.sop_uid, info.study_uid, info.blob_id)))
        shown = (copy.sop_uid, copy.frame)
        index = next((i for i in range(len(images)) if images.frame_of(i) == shown), None)
        if index is None:
            raise CustodianError("This image has no such frame.")
        study_uid = infos[0].study_uid
        door.check_restriction(study_uid)
        with door.store.reading() as conn:
            rows = [r for r in StudyBook(conn).export_rows((study_uid,)) if r.sop_uid == copy.sop_uid]
        request = copy.disclosure(study_uid)
        refuse = partial(_refused, door, request, tuple(r.reference for r in rows))
        header = read_attributes(door.store.plaintext(copy.sop_uid, study_uid, rows[0].blob))
        if not copy.identified and may_carry_burnt_in(header):
            raise refuse(NotPermitted("This image may show the patient's details in its pixels (burnt-in "
                                      "annotation), which cannot be removed: copy it identified, or not "
                                      "at all."))
        self._accounts.step_up(door.session, code)
        data = png(images.render(index, copy.window, invert=copy.invert, overlays=copy.identified))
        output = OutputFile(copy.out) if copy.out is not None else None
        digest = hashlib.sha256(data).hexdigest()
        with door.store.transaction() as conn:
            disclosure_id = DisclosureBook(conn).open_pending(
                request, new_serial(), door.actor, 1, len(data), digest,
                _disclosed_studies(rows, media_patient_ids(rows, "")), media=copy.media)
        if output is not None:
            try:
                output.file.write(data)
                output.publish()
            except OSError as exc:
                _settle(door, disclosure_id, made=False)
                raise CustodianError(f"The image could not be saved: {exc.strerror or exc}.") from None
            finally:
                output.close()
        _settle(door, disclosure_id, made=True)
        return data

    @gated(Action.DISCLOSURES)
    def disclosures(self, door: Access, patient_id: str, years: int = RETENTION_YEARS) -> list[Disclosure]:
        """The patient's accounting of disclosures (HIPAA 164.528): media made in the last years."""
        _settle_all(door)
        since = (datetime.now(UTC) - timedelta(days=365 * years + years // 4)).timestamp()
        with door.store.reading() as conn:
            found = DisclosureBook(conn).for_patient(patient_id, since)
        door.record(AuditEvent(EventType.STUDY_LIST, user=door.actor, patients=(patient_id,),
                               detail={"accounting_of_disclosures": len(found)}))
        return found

    @gated(Action.MANAGE_AGREEMENTS)
    def add_agreement(self, door: Access, agreement: Agreement) -> None:
        with door.store.transaction() as conn:
            AgreementBook(conn).put(agreement, door.actor)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "business_associate": agreement.recipient, "agreement": agreement.reference,
                "effective": agreement.effective, "expires": agreement.expires}))

    @gated(Action.MANAGE_AGREEMENTS)
    def revoke_agreement(self, door: Access, recipient: str, reason: str) -> None:
        with door.store.transaction() as conn:
            AgreementBook(conn).revoke(recipient, reason, door.actor)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "business_associate": recipient, "revoked": reason}))

    @gated(Action.MANAGE_AGREEMENTS)
    def agreements(self, door: Access) -> list[Agreement]:
        with door.store.reading() as conn:
            return AgreementBook(conn).list()


def _media_loads(door: Access, rows: list[ExportRow], ids: dict[int, str], deid: Deidentifier | None
                 ) -> tuple[list[ExportRow], list[Load], list[tuple[str, str]]]:
    """How each instance is read for the media (decrypted, de-identified, in the profile's
    transfer syntax); an instance that cannot be is left out with its reason, found by trying
    every one that needs more than a copy before anything is written (a damaged JPEG, say,
    never stops the whole export). (rows kept, their loads, (SOP Instance UID, reason) left out)."""
    if deid is not None:
        for r in rows:
            deid.remember_names(str(r.key), r.name, r.patient_id)
    kept: list[tuple[ExportRow, Load]] = []
    left_out: list[tuple[str, str]] = []
    for r in rows:
        stored = partial(door.store.plaintext, r.sop_uid, r.study_uid, r.blob)
        load = partial(_deidentified, deid, stored, str(r.key)) if deid is not None else \
            partial(_on_media, stored, None if r.patient_id else ids[r.key])
        if deid is not None or not r.patient_id or r.transfer_syntax != profile.TRANSFER_SYNTAX:
            try:
                load()
            except CustodianError as exc:
                left_out.append((r.sop_uid, str(exc)))
                continue
        kept.append((r, load))
    return [r for r, _ in kept], [load for _, load in kept], left_out


def _media_entries(rows: list[ExportRow], loads: list[Load], ids: dict[int, str], serial: str,
                   deid: Deidentifier | None, ae_title: str) -> list[Entry]:
    """DICOMDIR, README.TXT and every instance, each read when the archive writer asks for it.
    Patients are told apart by their record, not by Patient ID; one without an ID carries its
    media ID (``ids``) in the directory and in its files."""
    paths = file_ids([(str(r.key), r.study_uid, r.series_uid) for r in rows])
    listed = [Listed(ids[r.key], r.name, r.study_uid, r.study_date, r.study_time, "", r.accession,
                     r.study_description, r.series_uid, r.modality, r.series_number, r.sop_class, r.sop_uid,
                     profile.TRANSFER_SYNTAX, r.number, path) for r, path in zip(rows, paths, strict=True)]
    if deid is not None:
        listed = [deid.listed(item, str(r.key)) for item, r in zip(listed, rows, strict=True)]
    for n, r in enumerate(rows):
        if r.rows is None:  # not an image (SR, presentation state, KO...): its record needs more
            data = loads[n]()  # kept, so it is not decrypted and de-identified a second time
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            listed[n] = replace(listed[n], extra=header)
            loads[n] = partial(bytes, data)
    # The DICOMDIR is made first, alone: built in Python while the workers encrypt, it would
    # hold the GIL against them and slow the whole export more than it takes by itself.
    directory = dicomdir.build(listed)
    return [("DICOMDIR", lambda: directory),
            ("README.TXT", partial(readme, serial, ae_title, inside=True)),
            *((item.path, load) for item, load in zip(listed, loads, strict=True))]


def _disclosed_studies(rows: list[ExportRow], ids: dict[int, str]) -> list[DisclosedStudy]:
    seen: dict[str, DisclosedStudy] = {}
    for r in rows:
        seen.setdefault(r.study_uid, DisclosedStudy(r.study_uid, ids[r.key], r.issuer, r.name, r.study_date,
                                                    r.study_description))
    return list(seen.values())


def _refused(door: Access, request: ExportRequest, patients: tuple[str, ...], error: CustodianError
             ) -> CustodianError:
    """``error``, after the refused disclosure's Export event (who, about whom, to whom and why)."""
    door.record(AuditEvent(EventType.EXPORT, Outcome.MINOR_FAILURE, user=door.actor, studies=request.studies,
                           patients=patients, detail={"why": str(error),
                                                      "recipient_kind": request.recipient_kind.value,
                                                      "purpose": request.purpose.value}))
    return error


def _settle(door: Access, disclosure_id: int, *, made: bool) -> None:
    """Mark a pending disclosure made or abandoned, and write its Export event (by the user
    who exported, about the patients on the media)."""
    with door.store.transaction() as conn:
        book = DisclosureBook(conn)
        book.settle(disclosure_id, made)
        record = book.get(disclosure_id)
        door.record(AuditEvent(
            EventType.EXPORT, Outcome.SUCCESS if made else Outcome.SERIOUS_FAILURE, user=record.user,
            studies=tuple(s.study_uid for s in record.studies),
            patients=tuple(sorted({s.patient_id for s in record.studies})),
            detail={"disclosure": disclosure_id, "serial": record.serial, "media": record.media,
                    "recipient_kind": record.recipient_kind, "purpose": record.purpose,
                    "instances": record.instances, "sha256": record.sha256,
                    "deidentified": record.deidentified,
                    **({} if made else {"why": "the media was not completed"})}))


def _settle_all(door: Access) -> None:
    """Disclosures an interrupted export left pending: made if its media is in place and
    unchanged, else abandoned (the media never appeared)."""
    with door.store.reading() as conn:
        pending = DisclosureBook(conn).pending()
    for disclosure_id, out, expected in pending:
        made = False
        with contextlib.suppress(OSError), Path(out).open("rb") as fh:
            made = hashlib.file_digest(fh, "sha256").hexdigest() == expected
        _settle(door, disclosure_id, made=made)
