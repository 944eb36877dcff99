"""Hanging protocols in the vault: the site's, which the administrator keeps, and each reader's own.

A change is a configuration change in the trail. The site's protocols travel between stations as
a file signed with the site's key, in the format of the managed site policy (``custodian policy
sign`` makes it): either installed as part of the site policy itself (then read-only here, and
winning over a local site protocol of the same name) or read in by an administrator, which
replaces the station's site protocols once the signature verifies against the site's public key.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.audit.events import AuditEvent, EventType
from app.errors import UsageError
from app.imaging.protocols import Protocol, Scope, from_list, to_dict
from app.security import managed_policy
from app.security.roles import Action
from app.store.protocol_book import SITE, ProtocolBook
from app.vault.gate import Access, Service, gated, signed_in


class ProtocolService(Service):
    @signed_in
    def protocols(self, door: Access) -> list[Protocol]:
        """The site's protocols (the signed policy's first) and the caller's own."""
        with door.store.reading() as conn:
            book = ProtocolBook(conn)
            local, own = book.of(SITE), book.of(door.signed_in.id)
        managed = {p.name.casefold() for p in door.rules.protocols}
        return [*door.rules.protocols, *(p for p in local if p.name.casefold() not in managed), *own]

    @gated(Action.VIEW_IMAGES)
    def save(self, door: Access, protocol: Protocol) -> None:
        """Add or replace one of the caller's own protocols (a reader's, who hangs studies)."""
        if protocol.scope != Scope.USER:
            raise UsageError("The site's hanging protocols are kept by an administrator.")
        self._save(door, door.signed_in.id, protocol)

    @gated(Action.VIEW_IMAGES)
    def remove(self, door: Access, name: str) -> None:
        self._remove(door, door.signed_in.id, Scope.USER, name)

    @gated(Action.SITE_POLICY)
    def save_site(self, door: Access, protocol: Protocol) -> None:
        """Add or replace one of the site's protocols on this station."""
        if protocol.scope != Scope.SITE:
            raise UsageError("Only a site protocol is kept for the site; a reader keeps their own.")
        if protocol.name.casefold() in {p.name.casefold() for p in door.rules.protocols}:
            raise UsageError(f"The hanging protocol '{protocol.name}' is set by the signed site policy; "
                             "it cannot be changed at the workstation.")
        self._save(door, SITE, protocol)

    @gated(Action.SITE_POLICY)
    def remove_site(self, door: Access, name: str) -> None:
        self._remove(door, SITE, Scope.SITE, name)

    @gated(Action.SITE_POLICY)
    def export_site(self, door: Access) -> str:
        """The station's site protocols as the settings IT signs (``custodian policy sign``)."""
        with door.store.reading() as conn:
            local = ProtocolBook(conn).of(SITE)
        return json.dumps({managed_policy.PROTOCOLS_KEY: [to_dict(p) for p in local]}, indent=1,
                          sort_keys=True)

    @gated(Action.SITE_POLICY)
    def import_signed(self, door: Access, signed: bytes) -> list[Protocol]:
        """The site's protocols from a signed file: they replace this station's once its signature
        verifies against the site's public key; a file changed since it was signed is refused."""
        protocols = from_list(verified(signed).get(managed_policy.PROTOCOLS_KEY))
        with door.store.transaction() as conn:
            ProtocolBook(conn).replace_site(protocols)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "hanging_protocols": "imported", "protocols": [p.name for p in protocols]}))
        return list(protocols)

    def _save(self, door: Access, owner: int, protocol: Protocol) -> None:
        with door.store.transaction() as conn:
            ProtocolBook(conn).save(owner, protocol)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "hanging_protocol": protocol.name, "scope": protocol.scope.value, "change": "saved"}))

    def _remove(self, door: Access, owner: int, scope: Scope, name: str) -> None:
        with door.store.transaction() as conn:
            if not ProtocolBook(conn).remove(owner, name):
                raise UsageError(f"There is no {scope.value} hanging protocol named '{name}' to remove.")
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "hanging_protocol": name, "scope": scope.value, "change": "removed"}))


def site_keys() -> list[Path]:
    """The site's public keys this station trusts: the test site's, then the system location's."""
    named = os.environ.get("CUSTODIAN_SITE_KEY")
    system = managed_policy.SYSTEM_DIR / managed_policy.KEY_FILE
    return [Path(named), system] if named else [system]


def verified(signed: bytes) -> dict[str, object]:
    """The settings of a file signed with the site's key; UsageError saying why it is refused."""
    try:
        doc = json.loads(signed)
        settings, signature = doc["policy"], base64.b64decode(doc["signature"], validate=True)
        if not isinstance(settings, dict):
            raise TypeError("policy is not an object")
    except (ValueError, KeyError, TypeError):
        raise UsageError("This is not a signed site file: it cannot be read as one.") from None
    keys = [key for key in (_public_key(path) for path in site_keys()) if key is not None]
    if not keys:
        raise UsageError("The site's public key is not installed on this station, so a signed file cannot "
                         "be checked. Ask IT to install it.")
    for key in keys:
        try:
            key.verify(signature, managed_policy.canonical(settings))
            return settings
        except InvalidSignature:
            continue
    raise UsageError("The file was changed after the site signed it, or was signed with another key; "
                     "nothing was read in.")


def _public_key(path: Path) -> Ed25519PublicKey | None:
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None
