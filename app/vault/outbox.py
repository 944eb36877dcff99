"""Sending to the PACS: sends, the outbox that waits for an absent node, storage commitment."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydicom.uid import generate_uid

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError
from app.net.association import PeerError
from app.net.commitment import CommitmentReport, request_commitment
from app.net.dicomweb import echo_node, send_to
from app.net.nodes import Node
from app.net.send import Outgoing, SendReport
from app.net.watch import PacsStatus
from app.security.roles import Action, Duty
from app.store.books import CacheBook, OutboxBook, StudyBook
from app.vault.gate import Access, Service, duty, gated, opening
from app.vault.nodes import site_pacs

SEND_ATTEMPTS = 3
SEND_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class SendResult:
    report: SendReport
    queued: bool  # the node could not be reached: the send waits in the outbox
    error: str | None


class OutboxService(Service):
    @gated(Action.SEND)
    def send(self, door: Access, node_name: str, study_uid: str,
             progress: Callable[[int, int], None] | None = None) -> SendResult:
        """Send a cached study to a PACS node; if the node cannot be reached the send waits in the
        outbox and goes out when it is back (:meth:`flush`)."""
        with door.store.reading():
            door.nodes().get(node_name)  # a clear error now for a node that does not exist
        door.check_restriction(study_uid)
        return self._send(door, door.actor, node_name, study_uid, progress, queue=True)

    @gated(Action.SEND)
    def waiting(self, door: Access) -> list[dict[str, Any]]:
        """Sends still waiting for their PACS node: node, study UID, who asked, tries, why."""
        with door.store.reading() as conn:
            return [item.as_dict() for item in OutboxBook(conn).waiting()]

    @gated(Action.SEND)
    def flush(self, door: Access) -> int:
        """Try the waiting sends again now, at a technologist's request; how many went out."""
        return self.flush_waiting()

    @duty(Duty.FLUSH_OUTBOX)
    def flush_waiting(self, door: Access) -> int:
        """Try the waiting sends again, oldest first; the workstation's duty when the PACS is back,
        like audit forwarding. Returns how many went out."""
        with door.store.reading() as conn:
            waiting = OutboxBook(conn).waiting()
        done = 0
        for item in waiting:
            try:
                result = self._send(door, item.requested_by, item.node, item.study_uid, None, queue=False)
            except CustodianError as exc:
                _attempted(door, item.id, str(exc), done=False)
                continue
            _attempted(door, item.id, "; ".join(result.report.failed.values()), done=True)
            done += 1
        return done

    @opening
    def watch(self, door: Access) -> PacsStatus:
        """Whether the PACS answers (a health check: no patient data, not audited each time); when
        it does, the sends that waited for it go out, as the outbox's duty. Run in the
        background of the GUI."""
        node = site_pacs(door)
        if node is None:
            return PacsStatus(None, False, 0)
        try:
            echo_node(node, door.policy.ae_title)
            self.flush_waiting()
        except CustodianError as exc:  # (in emergency mode nothing is sent, as if the PACS were away)
            return PacsStatus(node.name, False, _waiting(door), str(exc))
        return PacsStatus(node.name, True, _waiting(door))

    @duty(Duty.RECEIVE)
    def commitment_report(self, door: Access, report: CommitmentReport) -> None:
        """The PACS's storage commitment answer (through the storage SCP or the request's own
        association): when every instance is committed, the study may leave the cache later."""
        with door.store.transaction() as conn:
            asked = OutboxBook(conn).answered(report.transaction_uid, len(report.committed),
                                              len(report.failed))
            if asked is None:
                return  # not ours, or reported twice
            complete = len(report.committed) >= asked.instances and not report.failed
            if complete:
                CacheBook(conn).at_pacs([asked.study_uid])
            door.record(AuditEvent(
                EventType.COMMITMENT, Outcome.SUCCESS if complete else Outcome.MINOR_FAILURE,
                user=f"dicom:{asked.node}", studies=(asked.study_uid,),
                detail={"committed": len(report.committed), "failed": len(report.failed)}))

    def _send(self, door: Access, requester: str, node_name: str, study_uid: str,
              progress: Callable[[int, int], None] | None, *, queue: bool) -> SendResult:
        with door.store.reading() as conn:
            node = door.nodes().get(node_name)
            stored = StudyBook(conn).instances(study_uid)
        patient = door.patient_of(study_uid)
        if not stored:
            raise CustodianError("That study is not in the local cache.")
        patients = (patient[1],) if patient else ()
        outgoing = [Outgoing(i.sop_uid, i.sop_class, i.transfer_syntax,
                             partial(door.store.plaintext, i.sop_uid, study_uid, i.blob)) for i in stored]
        report = SendReport()
        attempts = SEND_ATTEMPTS if queue else 1  # the outbox is tried again on its own schedule
        for attempt in range(1, attempts + 1):
            remaining = [o for o in outgoing
                         if o.sop_uid not in report.sent and o.sop_uid not in report.failed]
            try:
                send_to(node, door.policy.ae_title, remaining, report, progress)
                break
            except PeerError as exc:
                if queue and exc.transient and not report.sent and not report.failed:  # away: wait
                    with door.store.transaction() as conn:
                        OutboxBook(conn).queue(node_name, study_uid, requester, str(exc))
                        door.record(AuditEvent(EventType.SEND, Outcome.MINOR_FAILURE, user=requester,
                                               studies=(study_uid,), patients=patients,
                                               detail={"node": node_name, "queued": True, "why": str(exc)}))
                    return SendResult(report, queued=True, error=str(exc))
                if attempt == attempts or not exc.transient:
                    _sent(door, requester, node_name, study_uid, patients, report, str(exc))
                    raise
                time.sleep(SEND_RETRY_SECONDS * attempt)
        _sent(door, requester, node_name, study_uid, patients, report, None)
        pacs = site_pacs(door)
        if pacs is not None and pacs.name == node_name and not report.failed:
            self._ask_commitment(door, pacs, study_uid, [(o.sop_class, o.sop_uid) for o in outgoing])
        return SendResult(report, queued=False, error=None)

    def _ask_commitment(self, door: Access, pacs: Node, study_uid: str, instances: list[tuple[str,
                                                                                              str]]) -> None:
        """Ask the PACS to commit a study it just stored; the study becomes evictable when it says
        so. A PACS without storage commitment (DICOMweb has none): its success status for each
        instance must do."""
        if pacs.url:
            with door.store.transaction() as conn:
                CacheBook(conn).at_pacs([study_uid])
            return
        transaction = generate_uid()
        with door.store.transaction() as conn:  # first: the answer may arrive before the request returns
            OutboxBook(conn).ask(transaction, study_uid, pacs.name, len(instances))
        try:
            request_commitment(pacs, door.policy.ae_title, transaction, instances, self.commitment_report)
        except PeerError as exc:
            with door.store.transaction() as conn:
                OutboxBook(conn).withdraw(transaction)
                if not exc.transient:
                    CacheBook(conn).at_pacs([study_uid])


def _waiting(door: Access) -> int:
    with door.store.reading() as conn:
        return len(OutboxBook(conn).waiting())


def _attempted(door: Access, item_id: int, error: str, *, done: bool) -> None:
    with door.store.transaction() as conn:
        OutboxBook(conn).attempted(item_id, error, done=done)


def _sent(door: Access, requester: str, node_name: str, study_uid: str, patients: tuple[str, ...],
          report: SendReport, error: str | None) -> None:
    outcome = Outcome.SUCCESS if not (report.failed or error) else Outcome.MINOR_FAILURE
    door.record(AuditEvent(EventType.SEND, outcome, user=requester, studies=(study_uid,), patients=patients,
                           detail={"node": node_name, "sent": len(report.sent), "failed": len(report.failed),
                                   **({"why": error} if error else {})}))
