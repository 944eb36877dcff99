"""The PACS address book: nodes, their echo, the site's PACS, the storage SCP's TLS identity."""

from __future__ import annotations

import json
from dataclasses import asdict

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError, UsageError
from app.net.association import EchoResult
from app.net.dicomweb import echo_node
from app.net.nodes import Node
from app.security.roles import Action
from app.security.tls import TlsIdentity
from app.store.books import MetaBook
from app.store.workers import Workers
from app.vault.gate import Access, Service, gated, opening

SCP_TLS_KEY = "scp_tls"
PLAIN_NODE_REFUSED = "plain PACS node refused: the site requires TLS"


class NodeService(Service):
    @gated(Action.MANAGE_NODES)
    def add(self, door: Access, node: Node) -> None:
        if not node.secure and door.policy.require_tls:
            door.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE, user=door.actor,
                                   detail={"alert": PLAIN_NODE_REFUSED, "node": node.name}))
            raise UsageError(f"The site requires TLS on every DICOM connection, so the PACS node "
                             f"'{node.name}' needs " + ("an https:// URL." if node.url else
                                                        "--tls-ca, --tls-cert and --tls-key."))
        if node.tls is not None:
            node.tls.check()
        if node.auth and not node.secret:
            raise UsageError(f"The DICOMweb node '{node.name}' needs its password or token.")
        with door.store.transaction():
            door.nodes().put(node)
            door.record(AuditEvent(EventType.NODE_CHANGE, user=door.actor,
                                   detail={"node": node.name, "set": node.describe()}))

    @gated(Action.MANAGE_NODES)
    def remove(self, door: Access, name: str) -> None:
        with door.store.transaction():
            door.nodes().remove(name)
            door.record(AuditEvent(EventType.NODE_CHANGE, user=door.actor, detail={"node": name,
                                                                                   "removed": True}))

    @gated(Action.ECHO_NODE)
    def list(self, door: Access) -> list[Node]:
        with door.store.reading():
            return door.nodes().list()

    @gated(Action.ECHO_NODE)
    def echo(self, door: Access, name: str) -> EchoResult:
        with door.store.reading():
            node = door.nodes().get(name)
        try:
            result = echo_node(node, door.policy.ae_title)
        except CustodianError as exc:
            door.record(AuditEvent(EventType.NODE_ECHO, Outcome.MINOR_FAILURE, user=door.actor,
                                   detail={"node": name, "why": str(exc)}))
            raise
        door.record(AuditEvent(EventType.NODE_ECHO, user=door.actor, detail={"node": name, "ms": result.ms}))
        return result

    @opening
    def pacs(self, door: Access) -> Node | None:
        """The site's PACS: the node the site policy names, else the first one set."""
        return site_pacs(door)

    @gated(Action.SITE_POLICY)
    def set_scp_tls(self, door: Access, identity: TlsIdentity | None) -> None:
        """The storage SCP's TLS identity (its certificate and the CAs senders' certificates must
        chain to); None turns TLS off."""
        if identity is not None:
            identity.check()
        with door.store.transaction() as conn:
            if identity is None:
                MetaBook(conn).delete(SCP_TLS_KEY)
            else:
                MetaBook(conn).put(SCP_TLS_KEY, json.dumps(asdict(identity)))
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "scp_tls": identity.subject() if identity else "off"}))


def site_pacs(door: Access, workers: Workers | None = None) -> Node | None:
    """The site's PACS node; read through a receiver's ``workers`` (their lookup connection) when
    given, so an arrival never waits behind the index transaction of the one before."""
    if workers is not None:
        with workers.busy:
            nodes = door.nodes(workers.lookup).list()
    else:
        with door.store.reading():
            nodes = door.nodes().list()
    named = [n for n in nodes if n.name == door.policy.pacs_node]
    return next(iter(named or nodes), None)


def scp_identity(door: Access) -> TlsIdentity | None:
    with door.store.reading() as conn:
        kept = MetaBook(conn).get(SCP_TLS_KEY)
    return TlsIdentity(**json.loads(kept)) if kept else None
