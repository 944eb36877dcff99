"""How a command module adds its commands to the parser (calibre's `db/cli/cmd_*.py` idea: each
module declares its own options next to the functions that use them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


class Commands:
    """One level of sub-commands (`custodian X`, `custodian audit X`, ...).

    Every command also takes the global options (--home, --json, --debug), so they work before or
    after it; `common` carries them without defaults, so a command does not reset what was given
    before it.
    """

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def add(self, name: str, func: Callable[..., int], help_text: str,
            parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        p = self._sub.add_parser(name, parents=[self._common, *parents], help=help_text,
                                 description=help_text)
        p.set_defaults(func=func)
        return p

    def group(self, name: str, help_text: str, dest: str) -> Commands:
        """A command that only holds sub-commands (`custodian user add|disable|list`)."""
        return Commands(self._sub.add_parser(name, help=help_text).add_subparsers(dest=dest, required=True),
                        self._common)
