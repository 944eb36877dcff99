"""Values across the service's socket: JSON, read back only as the type the method declares.

The service's methods are typed; a value crosses as plain JSON and is rebuilt on the other side
from the declared type (a dataclass from its fields, an enum from its value), never from a type
name the sender chose. A client therefore cannot make the service build anything but what the
method accepts, and a malformed value is a plain refusal (:class:`Malformed`), not a traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Union

from app.errors import UsageError

JSON = Any  # what json.loads returns
BINARY = "application/octet-stream"  # an answer of raw bytes (an instance), not JSON


class Malformed(UsageError):
    """A value on the socket does not fit the type the method declares."""


def encode(value: object, *, secrets: bool = False) -> JSON:
    """A value as JSON (the declared type tells the other side how to read it back). A dataclass
    field marked secret (a private key) crosses blank unless ``secrets``: the service's answers
    never carry one; a client sending what it was given (a new node's key) does."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if (ndarray := _ndarray()) is not None and isinstance(value, ndarray):
        from app.service.arrays import encode_array  # (loaded with NumPy, which made the value)

        return encode_array(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: "" if f.metadata.get("secret") and not secrets
                else encode(getattr(value, f.name), secrets=secrets)
                for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {str(k): encode(v, secrets=secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v, secrets=secrets) for v in value]
    raise TypeError(f"{type(value).__name__} cannot cross the service's socket")


def decode(data: JSON, hint: object) -> Any:
    """``data`` read back as ``hint``; :class:`Malformed` when it does not fit."""
    try:
        return _decode(data, hint)
    except Malformed:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise Malformed(f"A value does not fit what the service expects ({type(exc).__name__}).") from None


def _decode(data: JSON, hint: object) -> Any:
    if hint is Any or hint is object:
        return data
    if hint is None or hint is type(None):
        return _exactly(data, None)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _union(data, typing.get_args(hint))
    if origin is not None:
        return _generic(data, origin, typing.get_args(hint))
    if not isinstance(hint, type):
        raise Malformed(f"The service cannot read a value of type {hint!r}.")
    return _plain(data, hint)


def _union(data: JSON, options: tuple[object, ...]) -> Any:
    if data is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _decode(data, option)
        except (Malformed, TypeError, ValueError, KeyError):
            continue
    raise Malformed("A value fits none of the types the service accepts there.")


def _generic(data: JSON, origin: object, args: tuple[object, ...]) -> Any:
    if origin is Callable or origin is typing.get_origin(Callable[[], None]):
        return _exactly(data, None)  # a callback never crosses; the caller gets none
    if origin in (list, Sequence, set, frozenset):
        items = [_decode(v, args[0] if args else Any) for v in _of(data, list)]
        if origin is set:
            return set(items)
        return frozenset(items) if origin is frozenset else items
    if origin is tuple:
        items = _of(data, list)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0]) for v in items)
        if len(items) != len(args):
            raise Malformed("A value has the wrong number of parts.")
        return tuple(_decode(v, a) for v, a in zip(items, args, strict=True))
    if origin in (dict, Mapping):
        key, value = args or (str, Any)
        return {_decode(k, key): _decode(v, value) for k, v in _of(data, dict).items()}
    raise Malformed(f"The service cannot read a value of type {origin!r}.")


def _plain(data: JSON, hint: type) -> Any:
    if hint is bool:
        return _of(data, bool)
    if hint is int:
        if isinstance(data, bool):
            raise Malformed("A number was expected.")
        return _of(data, int)
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise Malformed("A number was expected.")
        return float(data)
    if hint is str:
        return _of(data, str)
    if hint is bytes:
        return base64.b64decode(_of(data, str), validate=True)
    if hint is datetime:
        return datetime.fromisoformat(_of(data, str))
    if issubclass(hint, Path):
        return Path(_of(data, str))
    if issubclass(hint, enum.Enum):
        return hint(data)
    if hint is _ndarray():
        from app.service.arrays import decode_array  # (loaded with NumPy, which the hint is from)

        doc = _of(data, dict)
        return decode_array(doc, base64.b64decode(_of(doc["data"], str), validate=True))
    if dataclasses.is_dataclass(hint):
        return _record(_of(data, dict), hint)
    raise Malformed(f"The service cannot read a value of type {hint.__name__}.")


def _record(doc: dict[str, JSON], cls: type) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(doc) - set(fields)
    if unknown:
        raise Malformed(f"A {cls.__name__} does not have the field(s) {', '.join(sorted(unknown))}.")
    hints = hints_of(cls)
    return cls(**{name: _decode(doc[name], hints[name]) for name in fields if name in doc})


def _ndarray() -> type | None:
    """NumPy's array type once NumPy is loaded: before, no value or hint can be one, and a client
    that reads no images never loads it."""
    numpy = sys.modules.get("numpy")
    return None if numpy is None else numpy.ndarray


@cache
def hints_of(thing: object) -> dict[str, Any]:
    """Resolved annotations of a class or function (cached: they do not change)."""
    return typing.get_type_hints(thing)


def _exactly(data: JSON, expected: None) -> None:
    if data is not expected:
        raise Malformed("No value was expected there.")
    return None


_T = typing.TypeVar("_T")


def _of(data: JSON, kind: type[_T]) -> _T:
    if not isinstance(data, kind):
        raise Malformed(f"A {kind.__name__} was expected.")
    return data
