"""Key images: marked while reading, kept under the reader's name, sent to the PACS as a Key Object
Selection document stored in the study (so every later send of the study carries it too); a
document that arrives with a study opens as its "key images" series.

Safety: a document shows, under its study, only images of that same study. Instances of another
study (another patient's, whatever UIDs the document names) are never shown under it, and a
document whose own patient is not its study's patient never entered the cache (the import
quarantines it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError, UsageError
from app.imaging.key_objects import key_object, selected_images
from app.imaging.series import SeriesFrames
from app.net.dicomweb import send_to
from app.net.errors import PeerError
from app.net.send import Outgoing, SendReport
from app.security.roles import Action
from app.store.books import OutboxBook, StudyBook
from app.store.key_images import KOS_CLASS, KeyImage, KeyImageBook
from app.store.patients import PatientBook
from app.vault.gate import Access, Service, gated
from app.vault.intake import store_made
from app.vault.nodes import site_pacs

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class KeyObjectSent:
    """What ``send`` did: the document stored in the study, how many images it selects, and
    whether the node took it (else it waits in the outbox, or ``error`` says why not)."""

    sop_uid: str
    images: int
    node: str
    sent: bool
    queued: bool
    error: str | None = None


class KeyImageService(Service):
    @gated(Action.KEY_IMAGES)
    def mark(self, door: Access, sop_uid: str, frame: int = 0, on: bool = True) -> KeyImage | None:
        """Mark (``on``) or unmark one image (its ``frame``, from 0) as a key image of the reader's;
        what was marked or unmarked (None: nothing changed). Recorded in the trail with the patient."""
        with door.store.reading() as conn:
            held = StudyBook(conn).instance(sop_uid)
        if held is not None:  # (a restricted patient's image is refused as its viewing is)
            door.check_restriction(held.study_uid)
        with door.store.transaction() as conn:
            book = KeyImageBook(conn)
            if on:
                image = book.image(sop_uid, frame)
                if image is None:
                    raise CustodianError("This image is not in the cache; it was not marked.")
                changed = image if book.mark(door.actor, image) else None
            else:
                changed = book.unmark(door.actor, sop_uid, frame)
            if changed is not None:
                filed = PatientBook(conn).of_study(changed.study_uid)
                door.record(AuditEvent(
                    EventType.MEASUREMENT_SAVED if on else EventType.MEASUREMENT_DELETED, user=door.actor,
                    studies=(changed.study_uid,), patients=(filed[2],) if filed else (),
                    detail={"kind": "key image", "instance": sop_uid, "frame": frame}))
        return changed

    @gated(Action.KEY_IMAGES)
    def of_study(self, door: Access, study_uid: str) -> list[KeyImage]:
        """The reader's own key images of a study (nobody else's), in series and image order."""
        with door.store.reading() as conn:
            return KeyImageBook(conn).of_study(door.actor, study_uid)

    @gated(Action.SEND_KEY_IMAGES)
    def send(self, door: Access, study_uid: str, node_name: str | None = None) -> KeyObjectSent:
        """The reader's key images of a study as a Key Object Selection document ("Of Interest"):
        stored in the study, then sent to ``node_name`` (the site's PACS by default); while the
        node cannot be reached the study waits in the outbox with the document in it."""
        with door.store.reading() as conn:
            marked = KeyImageBook(conn).of_study(door.actor, study_uid)
            node = door.nodes().get(node_name) if node_name else site_pacs(door)
        if node is None:
            raise UsageError("No PACS node is set up to send key images to; an administrator adds one "
                             "('custodian node add').")
        if not marked:
            raise UsageError("No key images are marked in this study: mark them while reading (Ctrl+K), then "
                             "send them.")
        patients = door.check_restriction(study_uid)
        sop_uid, data, images = _document(door, marked)
        report = SendReport()
        try:
            send_to(node, door.policy.ae_title, [Outgoing(sop_uid, KOS_CLASS, EXPLICIT_LITTLE,
                                                          partial(bytes, data))], report)
        except PeerError as exc:
            queued = exc.transient
            with door.store.transaction() as conn:
                if queued:  # (the outbox sends the study, and the document with it, when the node is back)
                    OutboxBook(conn).queue(node.name, study_uid, door.actor, str(exc))
                _sent(door, study_uid, patients, node.name, report, str(exc), queued)
            return KeyObjectSent(sop_uid, images, node.name, False, queued, str(exc))
        _sent(door, study_uid, patients, node.name, report, None, False)
        error = next(iter(report.failed.values()), None)
        return KeyObjectSent(sop_uid, images, node.name, not report.failed, False, error)


def key_frames(door: Access, series_uid: str) -> SeriesFrames | None:
    """The images the Key Object Selection documents of a series select, as a series of their own
    ("Key images"); only those of the documents' own study (see the module's safety note). None if
    the series holds no such document or none of its images is cached."""
    with door.store.reading() as conn:
        documents = KeyImageBook(conn).documents(series_uid)
    if not documents:
        return None
    door.check_restriction(documents[0].study_uid)  # (before anything of a restricted patient is decrypted)
    wanted = [uid for doc in documents
              for uid in selected_images(door.store.plaintext(doc.sop_uid, doc.study_uid, doc.blob))]
    with door.store.reading() as conn:
        infos = {info.sop_uid: info for info in KeyImageBook(conn).frames(documents[0].study_uid, wanted)}
    chosen = [infos[uid] for uid in dict.fromkeys(wanted) if uid in infos]
    return SeriesFrames(chosen) if chosen else None


def _document(door: Access, marked: list[KeyImage]) -> tuple[str, bytes, int]:
    """The document for ``marked`` (one study's images), stored in the study as the import stores
    any instance (audited); its SOP Instance UID, bytes and how many images it selects."""
    uids = list(dict.fromkeys(k.sop_uid for k in marked))
    with door.store.reading() as conn:
        stored = [StudyBook(conn).instance(uid) for uid in uids]
    evidence = [dcmread(DicomBytesIO(door.store.plaintext(s.sop_uid, s.study_uid, s.blob)),
                        stop_before_pixels=True) for s in stored if s is not None]
    if not evidence:
        raise CustodianError("The marked images are no longer in the cache: retrieve the study, then send "
                             "its key images.")
    frames = {ds.SOPInstanceUID: [k.frame + 1 for k in marked if k.sop_uid == ds.SOPInstanceUID]
              for ds in evidence if int(ds.get("NumberOfFrames") or 1) > 1}
    sop_uid, data = key_object(evidence, frames, door.actor)
    if store_made(door, "key images", data).imported != 1:
        raise CustodianError("The key image document could not be stored in the study; nothing was sent.")
    return sop_uid, data, len(evidence)


def _sent(door: Access, study_uid: str, patients: tuple[str, ...], node: str, report: SendReport,
          error: str | None, queued: bool) -> None:
    outcome = Outcome.SUCCESS if not (report.failed or error) else Outcome.MINOR_FAILURE
    door.record(AuditEvent(EventType.SEND, outcome, user=door.actor, studies=(study_uid,), patients=patients,
                           detail={"node": node, "key_images": True, "sent": len(report.sent),
                                   "failed": len(report.failed), **({"queued": True} if queued else {}),
                                   **({"why": error} if error else {})}))
