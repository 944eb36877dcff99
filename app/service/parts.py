"""Files across the socket as they are: a call whose argument is a list of (name, bytes) — a batch
of files to import — travels as multipart/form-data (RFC 7578), not base64 in JSON, which cost
more than the import itself (300 CT slices: 2.2 s of 3 s).

The first part ("call") is the JSON call, in which that argument lists the files' names; each
further part is one file's bytes, in the same order. Parsed with python-multipart's streaming
parser into memory, never into temporary files (they would be plaintext PHI on disk).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import UsageError

FILES = list[tuple[str, bytes]]
CALL = "call"


def form(call: dict[str, Any], name: str, files: FILES) -> tuple[bytes, str]:
    """The request body and its Content-Type for ``call`` with ``files`` as argument ``name``."""
    boundary = secrets.token_hex(16).encode()
    args = {**call.get("args", {}), name: [label for label, _ in files]}
    chunks = [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="call"\r\n'
              b"Content-Type: application/json\r\n\r\n", json.dumps({**call, "args": args}).encode(), b"\r\n"]
    for _, data in files:
        chunks += [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode() +
                   b'"\r\nContent-Type: application/octet-stream\r\n\r\n', data, b"\r\n"]
    chunks.append(b"--" + boundary + b"--\r\n")
    return b"".join(chunks), f"multipart/form-data; boundary={boundary.decode()}"


async def read_form(content_type: str, stream: AsyncIterator[bytes], limit: int
                    ) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    """The JSON call and the files of each argument, from a body :func:`form` made."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise UsageError("The request's parts have no boundary.")
    parts: list[tuple[str, bytearray]] = []
    header: dict[bytes, bytes] = {}
    field = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[bytes(field).lower()] = header.get(bytes(field).lower(), b"") + data[start:end]

    def on_header_end() -> None:
        field.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(header.get(b"content-disposition", b""))
        parts.append((disposition.get(b"name", b"").decode("utf-8", "replace"), bytearray()))
        header.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data}, max_size=limit)
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise UsageError("The request is larger than the workstation service takes at once.")
        parser.write(chunk)
    parser.finalize()
    if not parts or parts[0][0] != CALL:
        raise UsageError("The request's first part is not the call.")
    try:
        call = json.loads(bytes(parts[0][1]))
    except ValueError:
        raise UsageError("The request is not JSON.") from None
    if not isinstance(call, dict):
        raise UsageError("The request is not a JSON object.")
    files: dict[str, list[bytes]] = {}
    for name, data in parts[1:]:
        files.setdefault(name, []).append(bytes(data))
    return call, files


def joined(names: object, files: list[bytes]) -> FILES:
    """The argument again: each file's name (from the call) with its bytes (from its part)."""
    if not isinstance(names, list) or len(names) != len(files) or not all(isinstance(n, str) for n in names):
        raise UsageError("The request's files do not match the names it gives.")
    return list(zip(names, files, strict=True))
