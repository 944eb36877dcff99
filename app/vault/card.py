"""Cards at the door: where the site's second factor is a card, a directory user's card and PIN
stand where the authenticator code would (login, lock screen, step-up for export and
break-glass), through the same lockout and into the same audit events (method "card").

A refusal by the card holder's doing (a wrong PIN, an expired, revoked or another CA's card, a
card that is someone else's) is a wrong code: counted toward the station's lockout. A card that
cannot be checked at all (none in the reader, the module missing, the CRL unreadable) is refused
plainly and audited, but counts toward no lockout, as an MFA server that does not answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.audit.events import AuditEvent, EventType, Outcome
from app.security.card import REVOKED, CardCheck, CardRefused, CardUnavailable
from app.vault.directory import DirectoryRefused, card_of

if TYPE_CHECKING:
    from app.vault.gate import Access

REVOKED_ALERT = "revoked card presented"


def site_card(door: Access) -> CardCheck | None:
    """The site's card settings, where directory users' second factor is a card."""
    directory = door.directory()
    return card_of(directory) if directory else None


def card_refusal(door: Access, card: CardCheck, name: str, pin: str, **detail: object) -> CardRefused | None:
    """The card's word on ``name`` with ``pin``: None when it is accepted, else why not. A card
    that cannot be checked is audited here and raised (CardUnavailable); a revoked one raises an
    alert besides."""
    try:
        card.check(name, pin)
    except CardRefused as exc:
        if exc.why == REVOKED:
            door.record(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE, user=name,
                                   detail={"alert": REVOKED_ALERT, **detail}))
        return exc
    except CardUnavailable as exc:
        door.record(AuditEvent(EventType.LOGIN, Outcome.MINOR_FAILURE, user=name,
                               detail={"method": "card", "why": exc.why, **detail}))
        raise
    return None


def card_holder(door: Access, card: CardCheck, name: str, password: str, pin: str, *, checked: bool) -> None:
    """Before the transaction of a login or unlock: the station's own refusals first (a locked or
    disabled account; the cached verifier unless the directory has just ``checked`` the password),
    so a locked account's PINs never reach the card and spend its own retry counter; then the
    card. Its refusal is a wrong code (DirectoryRefused, counted toward the lockout by the caller)."""
    with door.store.reading():
        user = door.accounts.check_password(name, password, checked=checked)[0]
    refused = card_refusal(door, card, user.name, pin)  # (the account's own spelling of the name)
    if refused is not None:
        raise DirectoryRefused(str(refused), refused.why, method="card")
