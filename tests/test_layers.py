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


def test_the_storage_engine_knows_no_users_network_media_or_screens() -> None:
    """Below the door, the store imports neither the services' concerns nor the door itself."""
    assert _breaking("app.store", ("app.net", "app.media", "app.ui", "app.cli", "app.selftest",
                                   "app.vault", "app.demo", "app.security.sessions",
                                   "app.security.roles")) == []


def test_lower_layers_never_import_the_door_or_its_users() -> None:
    lower = ("app.security", "app.imaging", "app.net", "app.media", "app.audit", "app.documents", "app.store")
    assert _breaking(lower, ("app.vault", "app.ui", "app.cli", "app.demo", "app.selftest")) == []


def test_the_service_layer_sits_between_the_door_and_its_users() -> None:
    """The door and everything under it know nothing of the socket; the service shows no screen."""
    below = ("app.vault", "app.security", "app.imaging", "app.net", "app.media", "app.audit", "app.store")
    assert _breaking(below, ("app.service",)) == []
    assert _breaking("app.service", ("app.ui", "app.cli", "app.demo", "PySide6")) == []


USERS = ("app.ui", "app.cli", "app.demo", "app.selftest")
# What the door's users may take from the store: plain records and types, no handle on the engine.
DATA_ONLY = {"app.store.records", "app.store.faults", "app.store.contingency", "app.store.books",
             "app.store.backup"}


def test_ui_and_cli_reach_the_store_only_through_the_door() -> None:
    def data_only(target: str) -> bool:  # (``from m import name`` also counts as m.name)
        return target in DATA_ONLY or target.rsplit(".", 1)[0] in DATA_ONLY

    reaching = [b for b in _breaking(USERS, ("app.store",)) if not data_only(b.split(" -> ")[1])]
    assert reaching == []


# ---------------------------------------------------------------------- the door
SERVICES = APP / "vault"


def _service_classes() -> list[type]:
    import importlib
    import inspect

    from app.vault.gate import Service

    found = []
    for path in sorted(SERVICES.glob("*.py")):
        module = importlib.import_module(_name(path))
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, Service) and c is not Service and c.__module__ == module.__name__]
    return found


def test_every_public_service_method_passes_the_gate() -> None:
    """A service method without a mark (gated, signed_in, duty or opening) would reach nothing it
    needs, but it would also be a door nobody reviewed: CI refuses it."""
    classes = _service_classes()
    assert len(classes) == 13  # (with key images, hanging protocols and presentation states)
    ungated = [f"{c.__name__}.{name}" for c in classes for name, member in vars(c).items()
               if callable(member) and not name.startswith("_") and not hasattr(member, "__door__")
               and name != "close"]
    assert ungated == []


def test_an_unmarked_method_is_found() -> None:
    from app.vault.gate import Service

    class Leaky(Service):
        def studies(self) -> None: ...

    assert [n for n, m in vars(Leaky).items() if callable(m) and not hasattr(m, "__door__")
            and not n.startswith("_")] == ["studies"]


def test_only_the_gate_opens_the_store() -> None:
    """Services hold the gate, never the engine: only gate.py and vault.py (the composition root)
    import the engine's core, and neither the services nor the door's users touch another
    object's private attributes (``vault._core``, ``access._gate``)."""
    opening_core = sorted(m for m, targets in graph().items() if "app.store.core" in targets
                          and m.startswith("app.vault"))
    assert opening_core == ["app.vault.gate", "app.vault.vault"]
    reaching = []
    for path in APP.rglob("*.py"):
        module = _name(path)
        if not module.startswith(("app.vault", *USERS)) or module in ("app.vault.gate", "app.vault.vault"):
            continue
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for node in ast.walk(tree):
            if isinstance(node,
                          ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls", *modules}):
                reaching.append(f"{module}: .{node.attr}")
    assert sorted(set(reaching)) == []
