"""The service's methods as a client learns them from the service itself (``GET /v1/methods``),
and a service as a client calls it (:class:`RemoteService`).

A client reads an answer back as the type the method declares (:mod:`app.service.codec`), but it
must not import the vault's services to learn that type: they load the store, DICOM and networking
that a client never uses (`custodian whoami` would start in half a second). The service writes each
hint as text (``list[app.store.records.StudySummary]``); the client reads it back here, importing
only the module of each record named, and only from Custodian, NumPy and the standard library's
typing modules. Nothing is evaluated: the text is parsed.
"""

from __future__ import annotations

import collections.abc
import datetime
import importlib
import pathlib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from app.errors import UsageError

if TYPE_CHECKING:
    from app.service.client import RemoteVault

_BUILTIN: dict[str, Any] = {"None": None, "Any": Any, "...": Ellipsis, **{t.__name__: t for t in (
    bool, int, float, str, bytes, object, list, tuple, dict, set, frozenset)}}
_PLACES = {"collections.abc": collections.abc, "datetime": datetime, "pathlib": pathlib}
_FROM = ("app.", "numpy")  # where a record named by the service may be imported from
_TOKEN = re.compile(r"\s*(\.\.\.|[\w.]+|[\[\],|])")


@dataclass(frozen=True)
class Offered:
    """One method as a client calls it (from :class:`app.service.methods.Method`)."""

    service: str
    name: str
    needs_session: bool  # the first argument is the caller's session (sent as its token)
    names: tuple[str, ...]  # every parameter after the session, in order: how positional arguments bind
    sent: tuple[str, ...]  # those whose values the client sends
    own_session: tuple[str, ...]  # those that take the caller's own session
    returns: str  # the answer's type, as :func:`describe` writes it
    spread: str | None = None  # a **keywords parameter: its dict is sent as one value
    files: str | None = None  # a parameter whose files travel as they are (multipart)


class RemoteService:
    """One service (``accounts``, ``reading``…) as offered through the socket."""

    def __init__(self, vault: RemoteVault, name: str) -> None:
        self._vault = vault
        self._name = name

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = self._offered(name)
        return lambda *args, **kwargs: self._vault.call(method, args, kwargs)

    def _offered(self, name: str) -> Offered:
        method = self._vault.offered().get((self._name, name))
        if method is None:
            raise UsageError(f"This is not available through the workstation service "
                             f"({self._name} {name.replace('_', ' ')}).")
        return method


class Unreadable(ValueError):
    """The service named a type this client cannot read back."""


def describe(hint: object) -> str:
    """``hint`` as the text :func:`resolve` reads back."""
    if hint is None or hint is type(None):
        return "None"
    if hint is Any or hint is Ellipsis:
        return "Any" if hint is Any else "..."
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(describe(a) for a in typing.get_args(hint))
    if origin is collections.abc.Callable:
        return "collections.abc.Callable"  # a callback never crosses: its signature does not matter
    if origin is not None:
        return f"{describe(origin)}[{', '.join(describe(a) for a in typing.get_args(hint))}]"
    if not isinstance(hint, type):
        raise Unreadable(f"{hint!r} is not a type")
    return hint.__name__ if hint.__module__ == "builtins" else f"{hint.__module__}.{hint.__qualname__}"


def resolve(text: str) -> Any:
    """The hint :func:`describe` wrote as ``text``."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s", "", text):
        raise Unreadable(f"the type {text!r} cannot be read")
    hint, rest = _union(tokens)
    if rest:
        raise Unreadable(f"the type {text!r} cannot be read")
    return hint


def _union(tokens: list[str]) -> tuple[Any, list[str]]:
    options = []
    while True:
        hint, tokens = _one(tokens)
        options.append(hint)
        if not tokens or tokens[0] != "|":
            break
        tokens = tokens[1:]
    return (options[0] if len(options) == 1 else Union[tuple(options)]), tokens  # noqa: UP007


def _one(tokens: list[str]) -> tuple[Any, list[str]]:
    if not tokens:
        raise Unreadable("a type ends too early")
    hint, tokens = _named(tokens[0]), tokens[1:]
    if not tokens or tokens[0] != "[":
        return hint, tokens
    args, tokens = [], tokens[1:]
    while True:
        arg, tokens = _union(tokens)
        args.append(arg)
        if not tokens:
            raise Unreadable("a type ends too early")
        separator, tokens = tokens[0], tokens[1:]
        if separator == "]":
            return hint[tuple(args)], tokens
        if separator != ",":
            raise Unreadable(f"{separator!r} was not expected in a type")


def _named(name: str) -> Any:
    if name in _BUILTIN:
        return _BUILTIN[name]
    module_name, _, attribute = name.rpartition(".")
    if module_name in _PLACES:
        module = _PLACES[module_name]
    elif module_name.startswith(_FROM):
        module = importlib.import_module(module_name)
    else:
        raise Unreadable(f"the type {name} is not one a client reads")
    found = getattr(module, attribute, None)
    if not isinstance(found, type):
        raise Unreadable(f"{name} is not a type")
    return found
