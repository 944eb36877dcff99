"""Small rooms: no module in app/ over 500 lines and no function over 80, so nothing grows back into
one class that does everything (the vault was 1,900 lines); the command line in one module per group
of commands (calibre's `db/cli/cmd_*.py`), so a command is read and changed in one place."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from app import cli

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
CLI = APP / "cli"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def test_modules_stay_under_500_lines() -> None:
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in APP.rglob("*.py")}
    assert len(lengths) > 100
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def test_functions_stay_under_80_lines() -> None:
    too_long = {}
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert too_long == {}


def test_every_command_a_module_declares_is_on_the_parser() -> None:
    # A module's PARSERS only reach `custodian` through cli.COMMANDS (its module, and its place in
    # --help): a command missing there would silently not exist, one named with another module
    # would fail when run.
    with_parsers = {path.stem: importlib.import_module(f"app.cli.{path.stem}").PARSERS
                    for path in CLI.glob("*.py") if path.stem != "__init__"
                    and hasattr(importlib.import_module(f"app.cli.{path.stem}"), "PARSERS")}
    declared = {name: module for module, parsers in with_parsers.items() for name in parsers}
    assert declared == {name: module for name, (module, _) in cli.COMMANDS.items()}
