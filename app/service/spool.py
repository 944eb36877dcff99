"""Export media and backups through the service: made in the service's own folder, fetched once
by the client.

The service account cannot write where the user wants the file (their folder, a USB stick), and
the user's account cannot read the vault. So the service makes it — already encrypted, with the
media's one-time passphrase or the backup's — in ``<home>/outgoing`` (the service's alone), the
disclosure or backup is recorded with the name the client gives, and the client that asked, and
only it, fetches the file once; it is deleted when fetched, and any left by a client that died
within the hour.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.errors import NotPermitted, UsageError
from app.media.disclosures import ExportRequest, ExportResult
from app.security.sessions import PeerId, Session
from app.service.codec import decode, encode
from app.vault import Vault

FOLDER = "outgoing"
KEPT_FOR = 3600.0  # seconds a made medium waits for its client


@dataclass(frozen=True)
class Made:
    uid: PeerId  # the OS account that asked
    path: Path
    at: float


class Spool:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._lock = threading.Lock()
        self._made: dict[str, Made] = {}

    @property
    def folder(self) -> Path:
        folder = Path(self._vault.home) / FOLDER
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def export(self, session: Session, uid: PeerId, body: dict[str, Any]) -> dict[str, Any]:
        """The export a client asked for, made here; its result, with the name to fetch it by."""
        request: ExportRequest = decode(body.get("request"), ExportRequest)
        code = body.get("code")
        if not isinstance(code, str):
            raise UsageError("Export needs your authenticator code.")
        path = self._new(request.media.value)
        result: ExportResult = self._vault.disclosure.export(session, request, code, written_to=path)
        return {"made": encode(replace(result, out=request.out)), "media": self._keep(uid, path)}

    def backup(self, session: Session, uid: PeerId, body: dict[str, Any]) -> dict[str, Any]:
        """The backup a client asked for, made here and sealed with the passphrase it sent."""
        out, passphrase = body.get("out"), body.get("passphrase")
        if not isinstance(out, str) or not isinstance(passphrase, str):
            raise UsageError("A backup needs a file name and its passphrase.")
        path = self._new("backup")
        result = self._vault.admin.backup(session, Path(out), passphrase, written_to=path)
        return {"made": encode(result), "media": self._keep(uid, path)}

    def _new(self, suffix: str) -> Path:
        self.sweep()
        return self.folder / f"{secrets.token_hex(16)}.{suffix}"

    def _keep(self, uid: PeerId, path: Path) -> str:
        with self._lock:
            self._made[path.name] = Made(uid, path, time.time())
        return path.name

    def take(self, uid: PeerId, name: str) -> Path:
        """The medium ``name`` for the account that asked for it; forgotten once handed out."""
        with self._lock:
            made = self._made.get(name)
            if made is None or made.uid != uid:
                raise NotPermitted("There is no medium of that name for this OS account.")
            del self._made[name]
        return made.path

    def sweep(self) -> None:
        """Media whose client never came (it died, or was killed) within the hour."""
        now = time.time()
        with self._lock:
            self._made = {k: m for k, m in self._made.items() if now - m.at < KEPT_FOR}
        for path in self.folder.iterdir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime >= KEPT_FOR:
                    path.unlink()
