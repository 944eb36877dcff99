"""What the workstation service offers its clients: the gate's own methods, read off their marks.

Every public service method carries the gate's mark (:mod:`app.vault.gate`). Through the socket a
client may call those that take a session — the role check, emergency mode, blanking and the audit
event happen in the service exactly as in embedded mode — and, of those that come before a session,
only logging in, resuming and logging out. A workstation duty (receiving, forwarding the trail,
flushing the outbox, evicting, prefetching) is the service's own work and is never offered, and
neither is a method whose values cannot cross: paths on the service's disk, live objects, or an
authenticator secret the client would hand back.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Union

import numpy as np

from app.security.accounts import Enrolment
from app.security.roles import Action
from app.security.sessions import Session
from app.service.codec import hints_of
from app.service.offer import Offered, describe
from app.service.parts import FILES
from app.vault.accounts import AccountService
from app.vault.admin import AdminService
from app.vault.cache import CacheService
from app.vault.disclosure import DisclosureService
from app.vault.gate import Service
from app.vault.intake import IntakeService
from app.vault.key_images import KeyImageService
from app.vault.nodes import NodeService
from app.vault.outbox import OutboxService
from app.vault.pacs import PacsService
from app.vault.protocols import ProtocolService
from app.vault.reading import ReadingService
from app.vault.states import StatesService
from app.vault.trail import TrailService

SERVICES: dict[str, type[Service]] = {
    "accounts": AccountService, "reading": ReadingService, "intake": IntakeService, "nodes": NodeService,
    "cache": CacheService, "outbox": OutboxService, "pacs": PacsService,
    "disclosure": DisclosureService, "trail": TrailService, "admin": AdminService,
    "key_images": KeyImageService, "protocols": ProtocolService, "states": StatesService,
}
# Before a session: these, and nothing else that is marked "opening" (what they hand out is no PHI).
OPENING = frozenset({("accounts", "login"), ("accounts", "resume"), ("accounts", "logout"),
                     ("accounts", "unlock"), ("accounts", "begin_first_enrolment"),
                     ("accounts", "finish_first_enrolment"), ("accounts", "inactivity_limit"),
                     ("accounts", "second_factor"), ("nodes", "pacs")})
# Whose own session may be locked after inactivity: found by its token without the idle check.
LOCK_SCREEN = frozenset({("accounts", "unlock")})
# The keyword by which the service tells a method the connection's OS account (SO_PEERCRED), to
# bind a session to it or check the binding.
PEER = "peer_uid"


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    needs_session: bool  # gated or signed in: the first argument is the caller's session
    params: tuple[tuple[str, Any], ...]  # (name, type) after the session; Session-typed ones excluded
    own_session: tuple[str, ...]  # parameters that take the caller's own session
    returns: Any
    spread: str | None = None  # a **keywords parameter: its dict is passed spread out
    peer: bool = False  # takes the connection's OS account (PEER)
    issued: tuple[str, ...] = ()  # parameters that take back an Enrolment the service issued


def _leaves(hint: object) -> typing.Iterator[object]:
    """Every type a hint is made of (through unions, generics and dataclass fields)."""
    seen: set[int] = set()
    todo = [hint]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        origin = typing.get_origin(current)
        if origin is not None:
            yield origin
            todo.extend(a for a in typing.get_args(current) if a is not Ellipsis and not isinstance(a, list))
            continue
        yield current
        if isinstance(current, type) and dataclasses.is_dataclass(current):
            todo.extend(hints_of(current)[f.name] for f in dataclasses.fields(current) if f.init)


_CROSSES = (bool, int, float, str, bytes, np.ndarray, datetime, Path, None, type(None), object, list, tuple,
            dict, set, frozenset, Mapping, Sequence, Union, types.UnionType, Callable)
# What a client may not hand the service: a path on the service's disk. (An Enrolment it may only
# hand back as the service issued it to the same OS account: see server.Issued.)
_NOT_SENT = (Path,)


def crosses(hint: object, *, sent: bool) -> bool:
    """Values of this type can cross the socket (and be read back as it); ``sent``: from a client."""
    for leaf in _leaves(hint):
        if sent and isinstance(leaf, type) and issubclass(leaf, _NOT_SENT):
            return False
        if leaf is Any or leaf in _CROSSES:
            continue
        if isinstance(leaf, type) and (issubclass(leaf, enum.Enum) or dataclasses.is_dataclass(leaf)):
            continue
        return False
    return True


def _hints(wrapped: Callable[..., Any]) -> dict[str, Any]:
    """A service method's resolved annotations. A vault module whose signatures name types it imports
    for type checking only (so that a command loads less: app.vault.reading) gives them by its
    ``signature_types()``."""
    late = getattr(sys.modules[wrapped.__module__], "signature_types", None)
    return typing.get_type_hints(wrapped, localns=late() if late is not None else None)


def _method(service: str, name: str, door: Callable[..., Any]) -> Method | None:
    kind = getattr(door, "__door__", None)
    wrapped = getattr(door, "__wrapped__", None)
    if kind is None or wrapped is None:
        return None
    needs_session = isinstance(kind, Action) or kind == "signed in"
    if not needs_session and (service, name) not in OPENING:
        return None
    hints = _hints(wrapped)
    params: list[tuple[str, Any]] = []
    own: list[str] = []
    spread, peer = None, False
    for param in list(inspect.signature(wrapped).parameters.values())[2:]:  # after self and the door
        hint = hints[param.name]
        if param.name == PEER:
            peer = True  # the service says who is connected, never the client
            continue
        if hint is Session:
            own.append(param.name)
        elif param.kind is param.VAR_KEYWORD:
            params.append((param.name, dict[str, hint]))  # type: ignore[valid-type]
            spread = param.name
        else:
            params.append((param.name, hint))
    returns = hints.get("return", type(None))
    if not all(crosses(h, sent=True) for _, h in params) or not crosses(returns, sent=False):
        return None
    issued = tuple(name for name, hint in params if hint is Enrolment)
    return Method(service, name, needs_session, tuple(params), tuple(own), returns, spread, peer, issued)


def _table() -> dict[tuple[str, str], Method]:
    found = {}
    for service, cls in SERVICES.items():
        for name, door in vars(cls).items():
            if not name.startswith("_") and callable(door):
                method = _method(service, name, door)
                if method is not None:
                    found[(service, name)] = method
    return found


def offered(method: Method) -> Offered:
    """``method`` as a client calls it, its types as text: a client learns this from the service
    (``GET /v1/methods``) so that it does not import the vault's services."""
    wrapped = getattr(SERVICES[method.service], method.name).__wrapped__
    return Offered(method.service, method.name, method.needs_session,
                   tuple(inspect.signature(wrapped).parameters)[2:],  # after self and the door
                   tuple(name for name, hint in method.params if hint != FILES), method.own_session,
                   describe(method.returns), method.spread,
                   next((name for name, hint in method.params if hint == FILES), None))


METHODS: dict[tuple[str, str], Method] = _table()
OFFERED: list[Offered] = [offered(method) for method in METHODS.values()]
