"""The layers, checked from the source: no import cycle in app/, and the contracts between layers.

Every import counts, at module level or inside a function (a lazy import is still a dependency);
only imports under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def _name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST) -> set[str]:
    """Modules a file imports when it runs (``from a import b`` counts as a and as a.b)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING",
                                                                           "typing.TYPE_CHECKING"):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


@cache
def graph() -> dict[str, set[str]]:
    """Each app module -> the app modules and outside top-level packages it imports."""
    modules = {_name(p): p for p in APP.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        imported = _imported(ast.parse(path.read_text(), str(path)))
        edges[name] = {m for m in imported if m in modules and m != name} | \
            {m.split(".")[0] for m in imported if not m.startswith("app")}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start] & edges.keys())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child] & edges.keys()))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _breaking(importers: str | tuple[str, ...], forbidden: tuple[str, ...],
              allowed: tuple[str, ...] = ()) -> list[str]:
    """'importer -> imported' for every import from a module under ``importers`` (not under
    ``allowed``) of a module under ``forbidden``."""
    def under(module: str, prefixes: str | tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in
                   ((prefixes,) if isinstance(prefixes, str) else prefixes))

    return sorted(f"{source} -> {target}" for source, targets in graph().items()
                  if under(source, importers) and not under(source, allowed)
                  for target in targets if under(target, forbidden))


def test_no_import_cycle_anywhere_in_app() -> None:
    assert _cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_qt_and_the_ui_stay_in_the_ui() -> None:
    """The core is Qt-free: only the UI (and the CLI commands that start it) import Qt or app.ui."""
    assert _breaking("app", ("PySide6", "app.ui"), allowed=("app.ui", "app.cli")) == []


def test_the_storage_engine_knows_no_network_media_or_screens() -> None:
    """Below the door, the store imports neither the services' concerns nor the door itself."""
    assert _breaking("app.store", ("app.net", "app.media", "app.ui", "app.cli", "app.selftest",
                                   "app.store.vault", "app.demo"), allowed=("app.store.vault",)) == []


def test_lower_layers_never_import_the_door_or_its_users() -> None:
    lower = ("app.security", "app.imaging", "app.net", "app.media", "app.audit", "app.documents")
    assert _breaking(lower, ("app.store.vault", "app.ui", "app.cli", "app.demo")) == []
