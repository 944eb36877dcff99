"""The local cache: priors fetched before they are needed, the budget, pinned studies."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import sqlcipher3

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError
from app.net.dicomweb import find_at, retrieve_from
from app.net.query import RemoteStudy, body_parts
from app.security.roles import Action, Duty
from app.store.books import CacheBook, StudyBook
from app.store.records import ImportReport
from app.store.workers import Workers
from app.vault.admin import destroy
from app.vault.gate import Access, Gate, Service, duty, gated
from app.vault.intake import IntakeService
from app.vault.nodes import site_pacs

RECENTLY_OPENED = 86_400.0  # seconds: a study opened within a day is never evicted


def newest_first(date: str) -> str:
    """Sorts YYYYMMDD dates newest first inside an ascending sort."""
    return "".join(str(9 - int(c)) if c.isdigit() else c for c in date)


class CacheService(Service):
    def __init__(self, gate: Gate, intake: IntakeService) -> None:
        super().__init__(gate)
        self._intake = intake
        self._prefetcher: ThreadPoolExecutor | None = None  # priors of arriving studies, one at a time
        self._prefetched: set[str] = set()

    def close(self) -> None:
        """Stop prefetching: a fetch under way just stops."""
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=False, cancel_futures=True)

    @gated(Action.PREFETCH)
    def prefetch_priors(self, door: Access, study_uid: str) -> list[str]:
        """The priors of a study a reader opened (see :meth:`prefetch_for`)."""
        return self.prefetch_for(study_uid, door.actor)

    @duty(Duty.PREFETCH)
    def prefetch_for(self, door: Access, study_uid: str, requested_by: str) -> list[str]:
        """Fetch the patient's most relevant earlier studies from the PACS into the cache, as many
        as the site's policy says: same modality and body part first, then the same body part,
        then the same modality, the most recent first within each. The workstation's own work on
        behalf of whoever opened the study or sent it (named in the trail)."""
        node, wanted = site_pacs(door), door.policy.prefetch_priors
        with door.store.reading() as conn:
            basis = CacheBook(conn).prior_basis(study_uid)
            cached = StudyBook(conn).uids()
        if node is None or not wanted or basis is None or not basis.patient_id:
            return []
        patient_id, date = basis.patient_id, basis.study_date or "99999999"
        modalities = set((basis.modalities or "").split(","))
        actor = f"prefetch for {requested_by}"
        try:
            found = find_at(node, door.policy.ae_title, patient_id=patient_id)
        except CustodianError as exc:
            door.record(AuditEvent(EventType.QUERY_PACS, Outcome.MINOR_FAILURE, user=actor,
                                   patients=(patient_id,), detail={"node": node.name, "why": str(exc),
                                                                   "query": {"patient_id": patient_id}}))
            return []
        priors = [s for s in found if s.study_uid not in cached and s.study_uid != study_uid
                  and (s.study_date or "") <= date]
        regions = set((basis.body_parts or "").split(",")) - {""}
        parts: dict[str, set[str]] = {}
        if regions and priors and not node.url:  # (series-level C-FIND; by DICOMweb, not asked)
            with contextlib.suppress(CustodianError):  # without them, modality and date still rank
                parts = body_parts(node, door.policy.ae_title, [s.study_uid for s in priors])

        def relevance(s: RemoteStudy) -> tuple[bool, bool, bool, str]:
            same_modality = bool(modalities & set(s.modalities.split("\\")))
            same_region = bool(regions & parts.get(s.study_uid, set()))
            return (not (same_modality and same_region), not same_region, not same_modality,
                    newest_first(s.study_date))

        priors.sort(key=relevance)
        fetched = []
        workers = self._intake.receiving_workers()
        try:
            for prior in priors[:wanted]:
                try:
                    report = retrieve_from(node, door.policy.ae_title, prior.study_uid,
                                           partial(self.arrive, node.ae_title or node.name, workers=workers))
                except CustodianError as exc:
                    door.record(AuditEvent(EventType.RETRIEVE, Outcome.MINOR_FAILURE, user=actor,
                                           studies=(prior.study_uid,), detail={"node": node.name,
                                                                               "why": str(exc)}))
                    continue
                door.record(AuditEvent(EventType.RETRIEVE, user=actor, studies=(prior.study_uid,),
                                       patients=(patient_id,), detail={"node": node.name,
                                                                       "prior_of": study_uid,
                                                                       "received": report.received}))
                fetched.append(prior.study_uid)
        finally:
            workers.close()
        self.evict()
        return fetched

    @duty(Duty.RECEIVE)
    def arrive(self, door: Access, calling_ae: str, items: list[tuple[str, bytes]],
               workers: Workers | None = None) -> ImportReport:
        """Instances a peer sent, received (see :meth:`IntakeService.receive`) and followed up:
        studies from the PACS are held there (so evictable); a new study from a modality gets its
        priors from the PACS before anyone opens it."""
        pacs = site_pacs(door, workers)
        from_pacs = pacs is not None and calling_ae == (pacs.ae_title or pacs.name)  # (DICOMweb: its name)
        report = self._intake.receive(calling_ae, items, workers, at_pacs=from_pacs)
        if pacs is None or from_pacs or not report.studies:
            return report
        new = [uid for uid in report.studies if uid not in self._prefetched]
        if new and door.policy.prefetch_priors:
            self._prefetched.update(new)
            if self._prefetcher is None:
                self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
            for uid in new:  # (once the study is indexed: a journaled receive indexes it behind)
                self._prefetcher.submit(_quietly, self._prefetch_indexed, uid, f"arrival from {calling_ae}",
                                        workers)
        return report

    def _prefetch_indexed(self, study_uid: str, requested_by: str, workers: Workers | None) -> list[str]:
        if workers is not None:
            workers.flush()
        return self.prefetch_for(study_uid, requested_by)

    @gated(Action.EVICT_CACHE)
    def evict_to_budget(self, door: Access) -> list[str]:
        """Bring the cache within its budget now (see :meth:`evict`)."""
        return self.evict()

    @duty(Duty.EVICT_CACHE)
    def evict(self, door: Access) -> list[str]:
        """Keep the cache within the site's budget: drop the least recently used studies the PACS
        holds (they can be fetched again), never pinned ones, ones opened in the last day, or ones
        the PACS has not confirmed. The workstation's duty after priors arrive. Returns the study
        UIDs dropped."""
        budget = door.policy.cache_budget_mb * 1_000_000
        if not budget:
            return []
        with door.store.reading() as conn:
            book = CacheBook(conn)
            total, candidates = book.total(), book.evictable(time.time() - RECENTLY_OPENED)
        evicted = []
        for study in candidates:
            if total <= budget:
                break
            destroy(door, study.uid, "cache", "cache budget: least recently used, held by the PACS")
            total -= study.size
            evicted.append(study.uid)
        return evicted

    @gated(Action.PIN_STUDY)
    def pin_study(self, door: Access, study_uid: str, pinned: bool = True) -> None:
        """Keep a study in the cache whatever the budget (teaching file, follow-up)."""
        with door.store.transaction() as conn:
            if not CacheBook(conn).pin(study_uid, pinned):
                raise CustodianError("This study is not in the cache.")
            door.record(AuditEvent(EventType.STUDY_PIN, user=door.actor, studies=(study_uid,),
                                   detail={"pinned": pinned}))

    @gated(Action.LIST_STUDIES)
    def usage(self, door: Access) -> dict[str, Any]:
        with door.store.reading() as conn:
            used = CacheBook(conn).usage()
        return {"bytes": used.bytes, "studies": used.studies, "pinned": used.pinned,
                "budget_mb": door.policy.cache_budget_mb}


def _quietly(call: Callable[..., object], *args: object) -> None:
    """Background work whose failure only means the priors come another time."""
    with contextlib.suppress(CustodianError, sqlcipher3.Error):
        call(*args)
