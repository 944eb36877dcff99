"""Errors that reach the user.

Every error the core raises on purpose is a ``CustodianError``: its message is a plain sentence
safe to show (no PHI, no key material) and it carries the CLI exit code from the contract.
"""

from __future__ import annotations


class CustodianError(Exception):
    exit_code = 1


class UsageError(CustodianError):
    exit_code = 2


class NotAuthenticated(CustodianError):
    """No live session: never logged in, logged out, timed out or account disabled."""

    exit_code = 3


class NotPermitted(CustodianError):
    exit_code = 3


class EnrolmentRequired(NotPermitted):
    """A session opened with a recovery code may do nothing until the authenticator is set up."""


class AuthenticationFailed(CustodianError):
    exit_code = 3


class AuthenticatorNotSetUp(CustodianError):
    """A directory user's first login at this station: the authenticator is set up before any code."""


class VaultLocked(CustodianError):
    """The master key could not be obtained (wrong passphrase, keyring refused)."""

    exit_code = 3


class VaultNotFound(CustodianError):
    pass


class VaultExists(CustodianError):
    pass


class NamesClash(CustodianError):
    """The vault's upgrade was refused: user names that differ only in case (named in the message)."""


class IntegrityError(CustodianError):
    exit_code = 4


class BusyError(CustodianError):
    """Another process holds the vault's write lock."""
