"""What an audit message names that the event's record does not, read when the event is written.

The record keeps patients by reference (Patient ID, or ``noid:`` and a study for a patient
without one) and PACS nodes by name, which is all the trail's own listings and reports need. The
PS3.15 message needs more: the schema requires a name for every participant object, and A.5.3
wants the network address of each end of a transfer. Reading these from the index in the
writer's transaction gives the names as they stood when the event happened, without changing the
records (so the hash chain of earlier records and what reports show stay as they were).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlcipher3

from app.audit.events import AuditEvent, EventType
from app.net.nodes import Node, NodeBook
from app.security.policy import SitePolicy
from app.store.patients import REFERENCE_SQL, PatientBook

PEER_USER = "dicom:"  # how the trail names a DICOM peer acting on its own (a sender, a PACS's report)


@dataclass(frozen=True)
class Peer:
    """A DICOM application at the other end of a transfer or query."""

    ae_title: str  # empty for a DICOMweb node
    host: str  # its network access point: a host, or a DICOMweb node's URL


@dataclass(frozen=True)
class StudyFacts:
    """A stored study as the message describes it."""

    description: str = ""
    accession: str = ""
    sop_classes: tuple[tuple[str, int], ...] = ()  # (SOP Class UID, number of instances)


@dataclass(frozen=True)
class MessageContext:
    """Without one (a record written before messages were kept) names are simply not known."""

    patient_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by reference
    studies: Mapping[str, StudyFacts] = field(default_factory=dict)
    # the patients the event's studies are filed under: A.5.3 names the patient of a transfer or
    # access, and some events (a retrieve, a commitment) record only the study
    filed_patients: tuple[str, ...] = ()
    peer: Peer | None = None
    local_ae: str = ""


def peer_name(event: AuditEvent) -> str | None:
    """The node (by name) or sending AE title an event's network exchange was with."""
    node = event.detail.get("node")
    if isinstance(node, str) and node:
        return node
    if event.user and event.user.startswith(PEER_USER):
        return event.user[len(PEER_USER):]
    return None


class IndexContext:
    """Reads the context of events from the index. ``nodes`` and ``ae_title`` give the nodes and
    the AE title in force (the vault's, which include the managed policy's); without them the
    index's own."""

    def __init__(self, conn: sqlcipher3.Connection, nodes: Callable[[], Sequence[Node]] | None = None,
                 ae_title: Callable[[], str] | None = None) -> None:
        self._conn = conn
        self._nodes = nodes or NodeBook(conn).list
        self._ae_title = ae_title or self._stored_ae_title

    def __call__(self, event: AuditEvent) -> MessageContext:
        studies, filed = self._studies(event.studies)
        names = self._disclosed(event) or {}
        refs = event.patients or tuple(filed)
        unresolved = [ref for ref in refs if ref not in names and ref not in filed]
        looked_up = PatientBook(self._conn).names(tuple(unresolved)) if unresolved else {}
        for ref in refs:
            names.setdefault(ref, filed.get(ref) or looked_up.get(ref) or ())
        wanted = peer_name(event)
        peer = self._peer(wanted) if wanted else None
        return MessageContext(names, studies, tuple(filed), peer, self._ae_title() if wanted else "")

    def _studies(self, uids: tuple[str, ...]) -> tuple[dict[str, StudyFacts], dict[str, tuple[str, ...]]]:
        """The events' studies, and the patients they are filed under with their names (in study
        order): the record a study names is the right one even where two share a Patient ID."""
        if not uids:
            return {}, {}
        marks = ", ".join("?" * len(uids))
        classes: dict[str, list[tuple[str, int]]] = {}
        for uid, sop_class, count in self._conn.execute(
                f"SELECT study_uid, sop_class, count(*) FROM instances WHERE study_uid IN ({marks}) "
                "GROUP BY study_uid, sop_class ORDER BY study_uid, sop_class", uids):
            classes.setdefault(uid, []).append((sop_class, count))
        rows = {row[0]: row[1:] for row in self._conn.execute(
            f"SELECT s.uid, {REFERENCE_SQL}, p.name, s.accession, s.description FROM studies s "
            f"JOIN patients p ON p.id = s.patient WHERE s.uid IN ({marks})", uids)}
        studies: dict[str, StudyFacts] = {}
        names: dict[str, tuple[str, ...]] = {}
        for uid in dict.fromkeys(uids):
            if uid in rows:
                ref, name, accession, description = rows[uid]
                studies[uid] = StudyFacts(description, accession, tuple(classes.get(uid, ())))
                names[ref] = _added(names.get(ref, ()), name)
        return studies, names

    def _disclosed(self, event: AuditEvent) -> dict[str, tuple[str, ...]] | None:
        """An export names patients as the media does (a patient without an ID by the media's
        own); the disclosure record keeps their names."""
        disclosure = event.detail.get("disclosure")
        if event.type is not EventType.EXPORT or not isinstance(disclosure, int):
            return None
        names: dict[str, tuple[str, ...]] = {}
        for ref, name in self._conn.execute(
                "SELECT patient_id, patient_name FROM disclosed_studies WHERE disclosure = ?", (disclosure,)):
            names[ref] = _added(names.get(ref, ()), name)
        return names

    def _peer(self, wanted: str) -> Peer | None:
        """By node name first (what events record), else by AE title (what a sender presents)."""
        nodes = self._nodes()
        match = next((n for n in nodes if n.name == wanted), None) or next(
            (n for n in nodes if n.ae_title == wanted), None)
        return Peer(match.ae_title, match.access_point) if match else None

    def _stored_ae_title(self) -> str:
        return SitePolicy.load(self._conn).ae_title


def _added(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    return names if name in names else (*names, name)
