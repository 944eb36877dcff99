"""The door to everything Custodian stores: :class:`Vault` and the services behind its gate.

``Vault`` is loaded when first asked for (PEP 562), so that importing a light module of this
package, or a client of the workstation service, does not load the store and every service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.vault.vault import Vault

__all__ = ["Vault"]


def __getattr__(name: str) -> Any:
    if name == "Vault":
        from app.vault.vault import Vault

        return Vault
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
