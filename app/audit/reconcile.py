"""Compare what the central repository received with the local chain.

The repository's file is read as RFC 5424 messages, one per line (rsyslog's
``RSYSLOG_SyslogProtocol23Format``); messages from other hosts and other applications are
skipped. A record the repository holds that differs from ours, a confirmed record it lacks, or
one it holds that we no longer have (our tail was cut, or the vault was swapped) is a finding;
a duplicate of a record it already has is expected after a reconnect and only counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.audit.log import AuditLog
from app.audit.syslog import APP_NAME, as_entry, as_head, parse


@dataclass
class Reconciliation:
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    checkpoints: int = 0
    pending: int = 0  # local records the repository has not yet confirmed
    missing: list[int] = field(default_factory=list)
    altered: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    bad_checkpoints: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered or self.unknown or self.bad_checkpoints)


def reconcile(lines: Iterable[str], log: AuditLog, sent_seq: int, host: str) -> Reconciliation:
    local: dict[int, tuple[str, bytes]] = {}  # seq -> (hash, digest of the message): small per record
    after = 0
    while chunk := log.entries(after, 10_000):
        local.update((e.seq, (e.hash, hashlib.sha256(e.message.encode()).digest())) for e in chunk)
        after = chunk[-1].seq
    result = Reconciliation()
    seen: set[int] = set()
    highest = 0
    for line in lines:
        received = parse(line)
        if received is None or received.host != host or received.app != APP_NAME:
            continue
        if (head := as_head(received)) is not None:
            result.checkpoints += 1
            mine = local.get(head.seq)
            if not log.head_signature_valid(head) or mine is None or mine[0] != head.head_hash:
                result.bad_checkpoints.append(head.seq)
            continue
        entry = as_entry(received)
        if entry is None:
            continue
        result.received += 1
        if entry.seq in seen:
            result.duplicates += 1
            continue
        seen.add(entry.seq)
        if entry.seq < highest:
            result.out_of_order += 1
        highest = max(highest, entry.seq)
        mine = local.get(entry.seq)
        if mine is None:
            result.unknown.append(entry.seq)
        elif mine != (entry.hash, hashlib.sha256(entry.message.encode()).digest()):
            result.altered.append(entry.seq)
    result.missing = [seq for seq in local if seq <= sent_seq and seq not in seen]
    result.pending = sum(1 for seq in local if seq > sent_seq and seq not in seen)
    return result
