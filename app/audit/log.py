"""The hash-chained audit log inside the encrypted index, with signed checkpoints.

Each record holds its sequence number, UTC time, the structured event and its DICOM PS3.15
audit message; its hash covers the previous record's hash and all of that, so an edited,
deleted, reordered or inserted record breaks the chain at a known sequence number. Every
``CHECKPOINT_EVERY`` records the head is signed with the workstation's Ed25519 key, so cutting
off the tail (which leaves an intact, shorter chain) is found too. Writing happens inside the
caller's transaction where there is one: an action and its record commit together or not at all.

A verify that finds the chain intact signs a "verified through record N" mark with the same key, so
a report walks only the records after N (seconds at ten million records otherwise); ``verify``
still walks the whole chain, and is what finds a record before N changed since it was checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlcipher3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit.anomaly import AnomalyRules
from app.audit.context import IndexContext, MessageContext
from app.audit.dicom_xml import to_xml
from app.audit.events import AuditEvent
from app.audit.report import AuditQuery, AuditRecord, ChainReport
from app.audit.syslog import ChainEntry, SignedHead
from app.errors import IntegrityError
from app.store import audit_lookup
from app.store.books import MetaBook, RetiredKeys
from app.store.index import write_transaction

if TYPE_CHECKING:
    from app.security.sealing import SigningKey

GENESIS = "0" * 64
CHECKPOINT_EVERY = 100
MARK_KEY = "audit_verified_mark"  # meta: the signed "verified through" mark (JSON)


def _digest(prev_hash: str, seq: int, at: bytes, record: bytes, message: bytes | None) -> str:
    head = b"%s\n%d\n%s\n%s" % (prev_hash.encode(), seq, at, record)
    # records written before messages were kept have none
    return hashlib.sha256(head + b"\n" + message if message else head).hexdigest()


def _checkpoint_payload(seq: int, head_hash: str, at: str) -> bytes:
    return f"custodian-audit-checkpoint\n{seq}\n{head_hash}\n{at}".encode()


def _mark_payload(seq: int, head_hash: str, full_at: str) -> bytes:
    return f"custodian-audit-verified\n{seq}\n{head_hash}\n{full_at}".encode()


def _signed_by(key: Ed25519PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def fingerprint(key: SigningKey) -> str:
    """A short fingerprint of a checkpoint key, so a repository can tell workstations (and a
    workstation's keys before and after a move) apart."""
    return hashlib.sha256(key.public_key().public_bytes_raw()).hexdigest()[:16]


@dataclass(frozen=True)
class _Mark:
    """The signed "verified through" mark: the chain up to ``seq`` (whose hash is ``hash``) was
    verified, in whole-chain walks the last of which was at ``full_at`` and incremental ones since."""

    seq: int
    hash: str
    full_at: str
    signed: bool = True


class _Lookup:
    """The patients lookup (app/store/audit_lookup.py), which the chain does not cover, read beside
    the chain's walk: each record's rows must name exactly the patients the record does."""

    def __init__(self, conn: sqlcipher3.Connection, after: int) -> None:
        self._rows = conn.execute(audit_lookup.IN_TRAIL_ORDER, (after,))
        self.pending: tuple[int, str] | None = self._rows.fetchone()

    def lists(self, seq: int, record: bytes) -> bool:
        listed = []
        while self.pending is not None and self.pending[0] <= seq:
            if self.pending[0] != seq:  # a row of no record
                return False
            listed.append(self.pending[1])
            self.pending = self._rows.fetchone()
        return listed == (json.loads(record).get("patients") or [])


class AuditLog:
    def __init__(self, conn: sqlcipher3.Connection, signing_key: SigningKey | None = None,
                 rules: AnomalyRules | None = None,
                 context: Callable[[AuditEvent], MessageContext] | None = None) -> None:
        self._conn = conn
        self.signing_key = signing_key
        self.rules = rules
        # what each message names beyond its record, read in the same transaction (the vault
        # sets one that knows the managed policy's nodes and AE title)
        self.context = context or IndexContext(conn)

    def append(self, event: AuditEvent) -> int:
        """Record ``event`` and any security alert it raises; returns the event's sequence number."""
        return self.append_all([event])[0]

    def append_all(self, events: list[AuditEvent]) -> list[int]:
        """Record several events in one transaction (one fsync), in order; their sequence numbers."""
        seqs = []
        # Inside the caller's transaction the events commit (or not) with the action they record.
        with contextlib.nullcontext() if self._conn.in_transaction else write_transaction(self._conn):
            for event in events:
                now = datetime.now(UTC)
                seqs.append(self._insert(event, now))
                for alert in self.rules.alerts_for(event, now) if self.rules else ():
                    self._insert(alert, now)
        return seqs

    def _insert(self, event: AuditEvent, now: datetime) -> int:
        row = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
        at = now.isoformat(timespec="microseconds")
        record = json.dumps(event.as_record(), sort_keys=True, separators=(",", ":"))
        message = to_xml(event, at, self.context(event))
        digest = _digest(prev, seq, at.encode(), record.encode(), message.encode())
        self._conn.execute(
            "INSERT INTO audit (seq, at, record, message, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (seq, at, record, message, prev, digest),
        )
        if seq % CHECKPOINT_EVERY == 0:
            self._checkpoint(seq, digest, at)
        return seq

    def _checkpoint(self, seq: int, head_hash: str, at: str) -> None:
        if self.signing_key is None:
            return
        signature = self.signing_key.sign(_checkpoint_payload(seq, head_hash, at))
        self._conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, head_hash, at, signature) VALUES (?, ?, ?, ?)",
            (seq, head_hash, at, signature))

    def checkpoint(self) -> int | None:
        """Sign the current head now (before a sync or a report); returns its sequence number."""
        row = self._conn.execute("SELECT seq, hash, at FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        self._checkpoint(*row)
        return row[0]

    def verify(self) -> ChainReport:
        """The whole chain, from its first record (``custodian audit verify``); a signed verified
        mark also vouches that its record is still there as it was (a tail cut below it is found)."""
        report = self._walk(0, GENESIS, datetime.now(UTC).isoformat(timespec="seconds"))
        mark = self._held_mark()
        if report.ok and mark is not None and mark.signed and not self._still_there(mark):
            return replace(report, ok=False, first_bad_seq=mark.seq)
        return report

    def verify_since_mark(self) -> ChainReport:
        """The chain after the signed verified mark only (the whole chain without a mark, or when
        its signature does not verify): what a report checks, in time that grows with the records
        added since the last check instead of with the trail. The records up to the mark were
        verified when it was set; a change to them since is found by :meth:`verify` alone."""
        mark = self._held_mark()
        if mark is None:
            return self.verify()
        if not mark.signed:
            return replace(self.verify(), mark_refused=True)
        if not self._still_there(mark):  # the marked record itself was changed or removed
            return ChainReport(0, False, mark.seq, start=mark.seq + 1, full_at=mark.full_at)
        return self._walk(mark.seq, mark.hash, mark.full_at)

    def _held_mark(self) -> _Mark | None:
        """The stored mark (None without one, or without the key to check it)."""
        held = MetaBook(self._conn).get(MARK_KEY)
        if held is None or self.signing_key is None:
            return None
        try:
            found = json.loads(held)
            mark = _Mark(int(found["seq"]), str(found["hash"]), str(found["full_at"]))
            signature = bytes.fromhex(found["signature"])
        except (ValueError, KeyError, TypeError):
            return _Mark(0, "", "", signed=False)
        return replace(mark, signed=_signed_by(self.signing_key.public_key(), signature,
                                               _mark_payload(mark.seq, mark.hash, mark.full_at)))

    def _still_there(self, mark: _Mark) -> bool:
        row = self._conn.execute("SELECT hash FROM audit WHERE seq = ?", (mark.seq,)).fetchone()
        return row is not None and row[0] == mark.hash

    def advance_mark(self, report: ChainReport, key: SigningKey | None = None) -> None:
        """Sign "verified through" the last record ``report`` walked, after a verify that found the
        chain intact (inside the caller's transaction), with ``key`` or the checkpoint key."""
        key = key or self.signing_key
        if not report.ok or key is None or report.head < 1:
            return
        signature = key.sign(_mark_payload(report.head, report.head_hash, report.full_at))
        mark = {"seq": report.head, "hash": report.head_hash, "full_at": report.full_at,
                "signature": signature.hex()}
        MetaBook(self._conn).put(MARK_KEY, json.dumps(mark))

    def _walk(self, after: int, prev: str, full_at: str) -> ChainReport:
        """The records after ``after`` (whose hash is ``prev``), their lookup rows and the signed
        checkpoints among them."""
        checkpoints = self._conn.execute("SELECT seq, head_hash, at, signature FROM audit_checkpoints "
                                         "WHERE seq > ? ORDER BY seq", (after,)).fetchall()
        signed = {row[0] for row in checkpoints}
        expected_seq, count = after + 1, 0
        hashes: dict[int, str] = {}  # of the signed heads only
        # Bytes straight from the page cache into the hash: no decoding and re-encoding per row.
        rows = self._conn.execute(
            "SELECT seq, CAST(at AS BLOB), CAST(record AS BLOB), CAST(message AS BLOB), prev_hash, hash "
            "FROM audit WHERE seq > ? ORDER BY seq", (after,))
        lookup = _Lookup(self._conn, after)

        def found(bad: int | None, ok: bool = False) -> ChainReport:
            return ChainReport(count, ok, bad, len(checkpoints), after + 1, full_at, prev)

        for seq, at, record, message, prev_hash, digest in rows:
            count += 1
            if (seq != expected_seq or prev_hash != prev
                    or digest != _digest(prev, seq, at, record, message)):
                return found(expected_seq if seq > expected_seq else seq)
            if not lookup.lists(seq, record):
                return found(seq)
            if seq in signed:
                hashes[seq] = digest
            prev, expected_seq = digest, seq + 1
        for seq, head_hash, at, signature in checkpoints:
            if not self.head_signature_valid(SignedHead(seq, head_hash, at, signature)):
                return found(seq)
            if seq not in hashes:  # a signed head that is no longer there: the tail was cut
                return found(expected_seq)
            if hashes[seq] != head_hash:
                return found(seq)
        if lookup.pending is not None:  # lookup rows of records that are not there
            return found(lookup.pending[0])
        return found(None, ok=True)

    def records(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        """The records ``query`` selects (all of them without one), newest first."""
        query = query or AuditQuery(limit=None)
        where, params = query.where()
        rows = self._conn.execute(f"SELECT seq, at, record, message FROM audit WHERE {where} "
                                  "ORDER BY seq DESC LIMIT ?", (*params, query.limit or -1))
        return [AuditRecord.from_row(seq, at, json.loads(record), message)
                for seq, at, record, message in rows]

    def entries(self, after: int = 0, limit: int | None = None) -> list[ChainEntry]:
        """Records after sequence number ``after``, oldest first, as the repository receives them."""
        rows = self._conn.execute(
            "SELECT seq, at, prev_hash, hash, message FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, -1 if limit is None else limit))
        return [ChainEntry(*row) for row in rows]

    def head(self) -> int:
        return self._conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0]

    def sign_again(self, key: SigningKey) -> int:
        """Every stored checkpoint signed with ``key``, the checkpoint key it moves to (inside the
        move's transaction); only a chain that verifies under the old key is signed again, so a
        move cannot launder an altered trail. The old key's public half is kept for what the central
        repository already holds signed by it. The number signed."""
        report = self.verify()
        if not report.ok:
            raise IntegrityError(f"The audit trail does not verify (first bad record {report.first_bad_seq}),"
                                 " so its checkpoints are not signed again under a new key and the key stays "
                                 "where it is. Run 'custodian audit verify'.")
        if self.signing_key is not None:
            RetiredKeys(self._conn).retire(self.signing_key.public_key().public_bytes_raw())
        rows = self._conn.execute("SELECT seq, head_hash, at FROM audit_checkpoints").fetchall()
        for seq, head_hash, at in rows:
            self._conn.execute("UPDATE audit_checkpoints SET signature = ? WHERE seq = ?",
                               (key.sign(_checkpoint_payload(seq, head_hash, at)), seq))
        self.advance_mark(report, key)  # the verified mark, too, under the key it moves to
        return len(rows)

    def sign_head(self, entry: ChainEntry) -> SignedHead:
        """A checkpoint for ``entry`` to send along, signed like the stored ones."""
        if self.signing_key is None:
            raise ValueError("the audit log was opened without its signing key")
        return SignedHead(entry.seq, entry.hash, entry.at,
                          self.signing_key.sign(_checkpoint_payload(entry.seq, entry.hash, entry.at)))

    def head_signature_valid(self, head: SignedHead) -> bool:
        """Signed by the checkpoint key, or by a key it replaced for a head from that key's time."""
        payload = _checkpoint_payload(head.seq, head.head_hash, head.at)
        key = None if self.signing_key is None else self.signing_key.public_key()
        if key is not None and _signed_by(key, head.signature, payload):
            return True
        # (read only when the current key does not verify: verify checks every head)
        return any(_signed_by(old, head.signature, payload)
                   for old, until in self._retired() if head.seq <= until)

    def _retired(self) -> list[tuple[Ed25519PublicKey, int]]:
        retired = RetiredKeys(self._conn).all()
        return [(Ed25519PublicKey.from_public_bytes(raw), until) for raw, until in retired]

    @property
    def key_id(self) -> str:
        """A short fingerprint of the checkpoint key, so a repository can tell workstations apart."""
        return "-" if self.signing_key is None else fingerprint(self.signing_key)

    def messages(self, limit: int | None = None) -> list[tuple[int, str]]:
        sql = "SELECT seq, message FROM audit ORDER BY seq DESC"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return list(rows)
