"""Storage Commitment (push model) as SCU: asking the PACS to take responsibility for instances.

A study made or received here may be dropped from the cache only once the PACS has confirmed it
keeps every instance. The request is an N-ACTION on an association of its own; the PACS answers
later with an N-EVENT-REPORT, usually on a new association to our storage SCP (which passes it
on), sometimes on the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import evt

from app.net.association import PeerError, application_entity, associated, named_sop_class
from app.net.nodes import Node

StorageCommitmentPushModel = named_sop_class("StorageCommitmentPushModel")

INSTANCE_UID = "1.2.840.10008.1.20.1.1"  # the well-known Storage Commitment Push Model instance
REQUEST = 1  # N-ACTION type: Request Storage Commitment


@dataclass(frozen=True)
class CommitmentReport:
    transaction_uid: str
    committed: tuple[str, ...]  # SOP Instance UIDs the PACS keeps
    failed: tuple[str, ...]


Reports = Callable[[CommitmentReport], None]


def read_report(sop_class: str, info: Dataset | None) -> CommitmentReport | None:
    """The report in an N-EVENT-REPORT request of ``sop_class`` carrying ``info`` (its event
    information), or None when it is not one."""
    if sop_class != StorageCommitmentPushModel or info is None or "TransactionUID" not in info:
        return None

    def uids(keyword: str) -> tuple[str, ...]:
        return tuple(str(item.ReferencedSOPInstanceUID) for item in info.get(keyword, []))

    return CommitmentReport(str(info.TransactionUID), uids("ReferencedSOPSequence"),
                            uids("FailedSOPSequence"))


def report_handler(
        deliver: Reports) -> tuple[evt.InterventionEvent, Callable[[evt.Event], tuple[int, None]]]:
    def handle(event: evt.Event) -> tuple[int, None]:
        report = read_report(str(event.request.AffectedSOPClassUID), event.event_information)
        if report is None:
            return 0x0112, None  # no such SOP instance
        deliver(report)
        return 0x0000, None

    return evt.EVT_N_EVENT_REPORT, handle


def request_commitment(node: Node, local_ae: str, transaction_uid: str,
                       instances: Sequence[tuple[str, str]], deliver: Reports) -> None:
    """Ask ``node`` to commit (SOP Class UID, SOP Instance UID) pairs under ``transaction_uid``
    (recorded by the caller first: the report may come back before this returns). A PeerError
    with ``transient=False`` means the node does not offer storage commitment."""
    request = Dataset()
    request.TransactionUID = transaction_uid
    references = []
    for sop_class, sop_uid in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        references.append(item)
    request.ReferencedSOPSequence = references
    ae = application_entity(local_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    with associated(node, ae, evt_handlers=[report_handler(deliver)]) as assoc:
        if not any(cx.abstract_syntax == StorageCommitmentPushModel for cx in assoc.accepted_contexts):
            raise PeerError(f"The PACS node '{node.name}' does not offer storage commitment.",
                            transient=False)
        status, _ = assoc.send_n_action(request, REQUEST, StorageCommitmentPushModel, INSTANCE_UID)
    if not status or status.Status != 0x0000:
        raise PeerError(f"The PACS node '{node.name}' refused the storage commitment request.",
                        transient=bool(not status))
