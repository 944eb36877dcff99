"""The hanging protocols kept in the vault: the site's (owner 0) and each user's own (owner: the
user's number, so a renamed user keeps them). Each row holds one definition as JSON; the
definition checks itself as it is read back (:class:`app.imaging.protocols.Protocol`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlcipher3

if TYPE_CHECKING:  # (the imaging modules load NumPy: the schema, which imports this, must not)
    from app.imaging.protocols import Protocol

# Schema step (app/store/schema.py).
MIGRATION = """
CREATE TABLE IF NOT EXISTS hanging_protocols (
    owner INTEGER NOT NULL,          -- 0: the site's; else users.id
    name TEXT NOT NULL COLLATE NOCASE,
    definition TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
"""
SITE = 0


class ProtocolBook:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def of(self, owner: int) -> list[Protocol]:
        """The site's (``SITE``) or one user's protocols, by name."""
        from app.imaging.protocols import loads

        return [loads(text) for (text,) in self._conn.execute(
            "SELECT definition FROM hanging_protocols WHERE owner = ? ORDER BY name", (owner,))]

    def save(self, owner: int, protocol: Protocol) -> None:
        """Add or replace (by name, whatever its case) the owner's protocol."""
        from app.imaging.protocols import dumps

        self.remove(owner, protocol.name)
        self._conn.execute("INSERT INTO hanging_protocols (owner, name, definition) VALUES (?, ?, ?)",
                           (owner, protocol.name, dumps(protocol)))

    def remove(self, owner: int, name: str) -> bool:
        return self._conn.execute("DELETE FROM hanging_protocols WHERE owner = ? AND name = ?",
                                  (owner, name)).rowcount > 0

    def replace_site(self, protocols: tuple[Protocol, ...]) -> None:
        """The site's protocols become exactly ``protocols`` (a shared file read in)."""
        self._conn.execute("DELETE FROM hanging_protocols WHERE owner = ?", (SITE,))
        for protocol in protocols:
            self.save(SITE, protocol)
