"""What becomes of an arriving instance, given what the index holds: stored, a duplicate, or a
conflict for the quarantine. An import decides it once from a lookup outside the write lock and
again, for its batch, under the lock as it commits (another import or the storage SCP may have
stored the same instance, or filed its study, meanwhile): both use these rules.
"""

from __future__ import annotations

import sqlcipher3

from app.store.ingest import ParsedInstance
from app.store.patients import Demographics

SAME_UID = "a different object with the same SOP Instance UID is already stored"
Known = tuple[str, str, tuple[object, ...]]  # what the index holds under a UID: SHA-256, syntax, identity

# What one instance keeps in any transfer syntax: a copy in another syntax that agrees on all of it
# is a duplicate (its bytes cannot match); another object under the same SOP Instance UID (another
# series, slice or pixel matrix, as from a modality that reuses UIDs) is a conflict to quarantine.
# In the same syntax only identical bytes are a duplicate.
_IDENTITY = ("sop_class, study_uid, series_uid, number, position, rows, columns, frames, samples, "
             "bits_allocated")


def identity(p: ParsedInstance) -> tuple[object, ...]:
    """The values of the _IDENTITY columns, as indexed."""
    return (p.sop_class, p.study_uid, p.series_uid, p.instance_number, p.position, p.rows, p.columns,
            p.frames, p.samples, p.bits_allocated)


def demographics(p: ParsedInstance) -> Demographics:
    return Demographics(p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex)


def held(conn: sqlcipher3.Connection, uids: list[str]) -> dict[str, Known]:
    """What the index holds under these SOP Instance UIDs (one query)."""
    if not uids:
        return {}
    rows = conn.execute(f"SELECT sop_uid, sha256, transfer_syntax, {_IDENTITY} FROM instances "
                        f"WHERE sop_uid IN ({','.join('?' * len(uids))})", uids).fetchall()
    return {uid: (digest, syntax, tuple(values)) for uid, digest, syntax, *values in rows}


def verdict(p: ParsedInstance, digest: str, known: Known | None, owner: Demographics | None) -> str | None:
    """None: store the instance; '': a duplicate of what is stored; else why it goes to the
    quarantine. ``digest``: the SHA-256 of its bytes (needed only when ``known``); ``owner``: the
    patient its study is filed under (None for a study the index does not hold)."""
    if known is not None and digest == known[0]:
        return ""
    if known is not None and (p.transfer_syntax == known[1] or identity(p) != known[2]):
        return SAME_UID
    if owner is not None:
        own = demographics(p)
        if (owner.patient_id, owner.issuer) != (own.patient_id, own.issuer):
            return "its study is already cached under a different Patient ID"
        if not owner.same_person(own):
            return "its study is already cached under the same Patient ID with another name or birth date"
    return None if known is None else ""  # (another transfer syntax of a stored instance: the first stays)
