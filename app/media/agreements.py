"""Business associate agreements (HIPAA 164.502(e)): no PHI goes to a business associate without
one in force. An agreement past its expiry date counts as revoked without anyone acting on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import sqlcipher3

from app.errors import CustodianError, NotPermitted, UsageError


def parse_date(text: str, what: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"The {what} date must be written as YYYY-MM-DD, not '{text}'.") from None


@dataclass(frozen=True)
class Agreement:
    recipient: str
    reference: str
    effective: str  # YYYY-MM-DD
    expires: str  # YYYY-MM-DD, the last day it is in force
    revoked: bool = False
    revoked_reason: str = ""

    def __post_init__(self) -> None:
        if not self.recipient.strip() or not self.reference.strip():
            raise UsageError("An agreement needs the business associate's name and the agreement reference.")
        if self.expires < self.effective:
            raise UsageError("An agreement cannot expire before it takes effect.")

    def status(self, today: date) -> str:
        if self.revoked:
            return "revoked"
        if today.isoformat() < self.effective:
            return "not yet in force"
        if today.isoformat() > self.expires:
            return "expired"
        return "in force"

    def as_json(self, today: date) -> dict[str, object]:
        return {"recipient": self.recipient, "reference": self.reference, "effective": self.effective,
                "expires": self.expires, "status": self.status(today), "revoked_reason": self.revoked_reason}


class AgreementBook:
    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def put(self, agreement: Agreement, actor: str) -> None:
        self._conn.execute(
            "INSERT INTO agreements (recipient, reference, effective, expires, revoked, revoked_reason, "
            "changed_by, changed_at) VALUES (?, ?, ?, ?, 0, '', ?, ?) ON CONFLICT (recipient) DO UPDATE SET "
            "reference = excluded.reference, effective = excluded.effective, "
            "expires = excluded.expires, revoked = 0, revoked_reason = '', "
            "changed_by = excluded.changed_by, changed_at = excluded.changed_at",
            (agreement.recipient.strip(), agreement.reference.strip(), agreement.effective,
             agreement.expires, actor, time.time()))

    def revoke(self, recipient: str, reason: str, actor: str) -> None:
        if not reason.strip():
            raise UsageError("Revoking an agreement needs a stated reason (--reason).")
        changed = self._conn.execute(
            "UPDATE agreements SET revoked = 1, revoked_reason = ?, changed_by = ?, changed_at = ? "
            "WHERE recipient = ?", (reason.strip(), actor, time.time(), recipient.strip())).rowcount
        if changed != 1:
            raise CustodianError(f"There is no business associate agreement with '{recipient}'.")

    def list(self) -> list[Agreement]:
        rows = self._conn.execute("SELECT recipient, reference, effective, expires, revoked, revoked_reason "
                                  "FROM agreements ORDER BY recipient")
        return [Agreement(r, ref, eff, exp, bool(rev), why) for r, ref, eff, exp, rev, why in rows]

    def require(self, recipient: str, today: date) -> Agreement:
        """The agreement in force with ``recipient``; refuses (with the reason) when there is none."""
        row = self._conn.execute(
            "SELECT recipient, reference, effective, expires, revoked, revoked_reason FROM agreements "
            "WHERE recipient = ?", (recipient.strip(),)).fetchone()
        if row is None:
            raise NotPermitted(f"Export refused: there is no business associate agreement with "
                               f"'{recipient.strip()}'. The privacy officer registers agreements.")
        agreement = Agreement(row[0], row[1], row[2], row[3], bool(row[4]), row[5])
        status = agreement.status(today)
        if status != "in force":
            why = {"revoked": f"was revoked ({agreement.revoked_reason})",
                   "expired": f"expired on {agreement.expires}",
                   "not yet in force": f"is not in force until {agreement.effective}"}[status]
            raise NotPermitted(f"Export refused: the business associate agreement with "
                               f"'{agreement.recipient}' ({agreement.reference}) {why}.")
        return agreement
