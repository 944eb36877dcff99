"""The PACS as a peer: query, retrieve, and the storage SCP that takes what peers send."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError
from app.net.admission import Admission
from app.net.dicomweb import find_at, retrieve_from
from app.net.query import RemoteStudy, RetrieveReport, move_study
from app.net.refusals import Refusal
from app.net.scp import StorageScp
from app.security.roles import Action, Duty
from app.security.tls import server_context
from app.store.books import StudyBook
from app.store.limits import IntakeLimits
from app.vault.cache import CacheService
from app.vault.gate import Access, Gate, Service, duty, gated
from app.vault.intake import IntakeService
from app.vault.nodes import scp_identity
from app.vault.outbox import OutboxService

ASSOCIATION_REFUSED = "DICOM association refused"


class PacsService(Service):
    def __init__(self, gate: Gate, intake: IntakeService, cache: CacheService, outbox: OutboxService) -> None:
        super().__init__(gate)
        self._intake = intake
        self._cache = cache
        self._outbox = outbox

    @gated(Action.QUERY)
    def query(self, door: Access, node_name: str, **filters: str) -> list[RemoteStudy]:
        """Study-level C-FIND (QIDO-RS for a DICOMweb node) at a PACS node, shown under the same
        minimum-necessary rules."""
        with door.store.reading() as conn:
            node = door.nodes().get(node_name)
            restricted = StudyBook(conn).restricted_ids()
        asked = {k: v for k, v in filters.items() if v}
        try:
            found = find_at(node, door.policy.ae_title, **filters)
        except CustodianError as exc:
            door.record(AuditEvent(EventType.QUERY_PACS, Outcome.MINOR_FAILURE, user=door.actor,
                                   detail={"node": node_name, "query": asked, "why": str(exc)}))
            raise
        shown = [door.shown(study, restricted=study.patient_id in restricted) for study in found]
        door.record(AuditEvent(EventType.QUERY_PACS, user=door.actor,
                               patients=tuple(sorted({s.patient_id for s in found if s.patient_id})),
                               detail={"node": node_name, "query": asked, "studies": len(found)}))
        return shown

    @gated(Action.RETRIEVE)
    def retrieve(self, door: Access, node_name: str, study_uid: str,
                 progress: Callable[[int, int | None],
                                    None] | None = None, *, move: bool = False) -> RetrieveReport:
        """Bring a study from a PACS node into the vault, no plaintext file on the way: by C-GET on
        the same association, or (``move``) by C-MOVE to this workstation's storage SCP. For a
        move the SCP must be listening: the GUI's, else one started for the duration. From a
        DICOMweb node, by WADO-RS, each instance arriving in memory as a C-GET's does."""
        with door.store.reading():
            node = door.nodes().get(node_name)
        workers = None if move and not node.url else self._intake.receiving_workers()
        try:
            if workers is None:
                with self._listening():
                    report = move_study(node, door.policy.ae_title, study_uid, progress)
            else:
                report = retrieve_from(node, door.policy.ae_title, study_uid, partial(
                    self._cache.arrive, node.ae_title or node.name, workers=workers), progress,
                    max_data=IntakeLimits.of(door.policy).file_bytes)
        except CustodianError as exc:
            door.record(AuditEvent(EventType.RETRIEVE, Outcome.SERIOUS_FAILURE, user=door.actor,
                                   studies=(study_uid,), detail={"node": node_name, "why": str(exc)}))
            raise
        finally:
            if workers is not None:
                workers.close()
        outcome = Outcome.SUCCESS if not (report.refused or report.failed_at_pacs) else Outcome.MINOR_FAILURE
        door.record(AuditEvent(EventType.RETRIEVE, outcome, user=door.actor, studies=(study_uid,),
                               detail={"node": node_name, "received": report.received,
                                       "refused": len(report.refused),
                                       "failed_at_pacs": report.failed_at_pacs}))
        return report

    @duty(Duty.RECEIVE)
    def storage_scp(self, door: Access, *, port: int | None = None, host: str | None = None) -> StorageScp:
        """The storage SCP (not yet listening), as this workstation's AE title, for the PACS nodes,
        on the site policy's address and port unless given; with TLS (client certificates required)
        once the site set an identity for it. Each refused association is a Security Alert."""
        with door.store.reading():
            admission = Admission(door.nodes().list(), require_tls=door.policy.require_tls)
            identity = scp_identity(door)
        tls = server_context(identity) if identity is not None else None
        if admission.ae_titles:  # (without any, the SCP refuses to be made)
            self._intake.sweep_unindexed()
        workers = self._intake.receiving_workers(journaled=True)
        try:
            return StorageScp(partial(self._cache.arrive, workers=workers), ae_title=door.policy.ae_title,
                              settle=workers.flush,
                              port=door.policy.scp_port if port is None else port, admission=admission,
                              host=door.policy.scp_address if host is None else host, tls=tls,
                              on_stop=workers.close, reports=self._outbox.commitment_report,
                              refused=partial(_audit_refusal, door), limits=IntakeLimits.of(door.policy))
        except BaseException:
            workers.close()
            raise

    @contextlib.contextmanager
    def _listening(self) -> Iterator[None]:
        """The storage SCP for a C-MOVE: started here unless one already holds the port."""
        scp = self.storage_scp()
        try:
            scp.start()
        except OSError:  # the port is taken: the workstation's own SCP (the GUI's) is running
            scp.stop()
            yield
            return
        try:
            yield
        finally:
            scp.stop()


def _audit_refusal(door: Access, refusal: Refusal) -> None:
    door.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE,
                           user=f"dicom:{refusal.calling_ae}" if refusal.calling_ae else None,
                           detail={"alert": ASSOCIATION_REFUSED, "calling_ae": refusal.calling_ae,
                                   "address": refusal.address, "why": refusal.why,
                                   **({"repeated": refusal.repeated} if refusal.repeated else {})}))
