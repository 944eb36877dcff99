"""Where Custodian keeps its data (CONTRACT: --home, else $CUSTODIAN_HOME, else the user data dir)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("CUSTODIAN_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("Custodian", "Custodian"))


def resource_path(name: str) -> Path:
    """A file under the top-level ``resources/`` folder, from a checkout or a frozen build."""
    base = getattr(sys, "_MEIPASS", None)
    root = Path(base) if base else Path(__file__).resolve().parent.parent
    return root / "resources" / name


def client_state_dir() -> Path:
    """Where a client of the workstation service keeps its session token (this OS account's own)."""
    return Path(platformdirs.user_state_dir("Custodian", "Custodian"))
