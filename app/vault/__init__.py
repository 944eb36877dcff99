"""The door to everything Custodian stores: :class:`Vault` and the services behind its gate."""

from app.vault.vault import Vault

__all__ = ["Vault"]
