"""The hash-chained audit log inside the encrypted index.

Each record's hash covers the previous record's hash, its sequence number, time and content, so
an edited, deleted, reordered or inserted record breaks the chain at a known sequence number.
Writing happens inside the caller's transaction where there is one, so an action and its audit
record are committed together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlcipher3

from app.audit.events import AuditEvent

GENESIS = "0" * 64


def _digest(prev_hash: str, seq: int, at: str, record: str) -> str:
    h = hashlib.sha256()
    h.update(f"{prev_hash}\n{seq}\n{at}\n".encode())
    h.update(record.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ChainReport:
    events: int
    ok: bool
    first_bad_seq: int | None


class AuditLog:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def append(self, event: AuditEvent) -> int:
        conn = self._conn
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            at = datetime.now(UTC).isoformat(timespec="microseconds")
            record = json.dumps(event.as_record(), sort_keys=True, separators=(",", ":"))
            conn.execute(
                "INSERT INTO audit (seq, at, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                (seq, at, record, prev, _digest(prev, seq, at, record)),
            )
            if own:
                conn.execute("COMMIT")
        except BaseException:
            if own:
                conn.execute("ROLLBACK")
            raise
        return seq

    def verify(self) -> ChainReport:
        prev, expected_seq, count = GENESIS, 1, 0
        rows = self._conn.execute("SELECT seq, at, record, prev_hash, hash FROM audit ORDER BY seq")
        for seq, at, record, prev_hash, digest in rows:
            count += 1
            if seq != expected_seq or prev_hash != prev or digest != _digest(prev, seq, at, record):
                return ChainReport(count, False, expected_seq if seq > expected_seq else seq)
            prev, expected_seq = digest, seq + 1
        return ChainReport(count, True, None)

    def records(self, limit: int | None = None) -> list[dict[str, object]]:
        sql = "SELECT seq, at, record FROM audit ORDER BY seq DESC"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [{"seq": s, "at": a, **json.loads(r)} for s, a, r in rows]
