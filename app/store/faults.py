"""Disk faults under the vault (full, read-only, failing) as plain errors.

SQLite and the OS report these as an ``OperationalError`` or an ``OSError`` deep inside a write;
shown as they are they look like a bug, or worse, like a wrong key. Every index write commits
through :func:`app.store.index.write_transaction` and every blob is indexed only after it is
durable, so one sentence can say what happened and that what was stored before is intact.
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

    def __init__(self, doing: str, why: str) -> None:
        super().__init__(f"{doing} because {why}. Everything stored before is intact.")
        self.why = why


def disk_fault(exc: BaseException) -> str | None:
    """Why the disk refused, when ``exc`` is a disk fault; else None."""
    if isinstance(exc, StorageFault):
        return exc.why
    if isinstance(exc, OSError):
        return _BY_ERRNO.get(exc.errno or 0)
    if isinstance(exc, sqlcipher3.OperationalError):
        return next((text for key, text in _BY_SQLITE.items() if key in str(exc)), None)
    return None
