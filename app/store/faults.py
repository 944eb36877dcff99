"""Disk faults under the vault (full, read-only, failing) as plain errors.

SQLite and the OS report these as an ``OperationalError`` or an ``OSError`` deep inside a write;
shown as they are they look like a bug, or worse, like a wrong key. The vault turns them into
one sentence that says what happened and that what was stored before is intact (every write is
a transaction or a blob indexed only after it is durable).
"""

from __future__ import annotations

import errno

import sqlcipher3

from app.errors import CustodianError

FULL = "the disk holding the vault is full; free some space and try again"
READ_ONLY = "the vault's folder is read-only (Custodian writes its index, audit trail and images there)"
FAILING = "the disk holding the vault reported an input/output error; have it checked"

_BY_ERRNO = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EROFS: READ_ONLY, errno.EIO: FAILING}
_BY_SQLITE = {"database or disk is full": FULL, "attempt to write a readonly database": READ_ONLY,
              "disk I/O error": FAILING}


class StorageFault(CustodianError):
    """The disk refused a write; nothing stored before was changed."""


def storage_fault(exc: BaseException, doing: str) -> StorageFault | None:
    """The plain error for ``exc`` when it is a disk fault, else None. ``doing`` starts the
    sentence ("The import stopped ... because the disk holding the vault is full; ...")."""
    why = None
    if isinstance(exc, OSError):
        why = _BY_ERRNO.get(exc.errno or 0)
    elif isinstance(exc, sqlcipher3.OperationalError):
        why = next((text for key, text in _BY_SQLITE.items() if key in str(exc)), None)
    if why is None:
        return None
    return StorageFault(f"{doing} because {why}. Everything stored before is intact.")
