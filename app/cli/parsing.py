"""How a command module adds its commands to the parser (calibre's `db/cli/cmd_*.py` idea: each
module declares its own options next to the functions that use them).

A module is imported only when one of its commands is the one given (see Command): the
parser of `custodian --help` is the table of commands alone, and a command starts without the
other modules and what they import (the vault, DICOM, networking, Qt)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any


class Commands:
    """One level of sub-commands under a command (`custodian audit X`, `custodian user X`, ...).

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


class Command(argparse.ArgumentParser):
    """A top-level command's parser. Its name and help come from the table of commands
    (app/cli/__init__.py); the module that runs it fills in its options and its function, imported
    only when the command is the one being parsed."""

    def __init__(self, *args: Any, module: str, command: str, summary: str, common: argparse.ArgumentParser,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._summary = summary
        self._common = common
        self._declare: Callable[[], object] | None = lambda: importlib.import_module(
            f"app.cli.{module}").PARSERS[command](self)

    def runs(self, func: Callable[..., int]) -> Command:
        """The command is run by ``func`` and takes the global options; its own go on this parser."""
        self._add_container_actions(self._common)  # (what argparse's parents= does)
        self.description = self._summary
        self.set_defaults(func=func)
        return self

    def group(self, dest: str) -> Commands:
        """The command only holds sub-commands (`custodian user add|disable|list`)."""
        return Commands(self.add_subparsers(dest=dest, required=True, parser_class=argparse.ArgumentParser),
                        self._common)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: Any = None) -> tuple[Any, list[str]]:
        if self._declare is not None:
            declare, self._declare = self._declare, None
            declare()
        return super().parse_known_args(args, namespace)
