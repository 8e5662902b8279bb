"""The layout's promises (README, "Development"), checked on the source itself.

- ingest imports nothing from worker, and no process imports the fake Stripe at run time: only
  the demo does, and only when it plays;
- no two modules import each other, directly or around a loop;
- each concern of `shared/` has one public entry: other packages import `shared.access`, not
  `shared.access.policy`.

Imports are read with `ast` (what a module imports at its top level runs when it is imported;
an import inside a function runs only when that function does).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "worker", "shared", "api")
# Subpackages of shared/ with one public entry (their __init__).
CONCERNS = ("shared.access", "shared.coordination", "shared.stripe_api", "shared.publishing", "shared.db")
ENTRY_POINTS = ("ingest.__main__", "worker.__main__", "worker.cli", "api.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names this module imports (`from a.b import c` gives `a.b` and `a.b.c`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: Iterable[ast.AST] = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {i for i in _imports(path, top_level_only=top_level_only) if i in modules and i != name}
        for name, path in modules.items()
    }


def _reach(graph: dict[str, set[str]], start: str, *, parents: bool = True) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
            # Importing `a.b.c` runs `a/__init__` and `a/b/__init__` first.
            parent = name.rpartition(".")[0]
            if parent and parents:
                todo.append(parent)
    return seen


def test_ingest_imports_nothing_from_worker() -> None:
    """Not at the top of a module, and not inside a function either."""
    graph = _graph(top_level_only=False)
    for name in graph:
        if name.startswith("ingest"):
            assert not {m for m in _reach(graph, name) if m.startswith("worker")}, name


def test_only_the_demo_imports_the_fake_stripe() -> None:
    """The service runs without the fake installed: no entry point reaches it at import time,
    and the only modules that name it are the demo and the launcher (inside the demo's branch)."""
    modules = _modules()
    naming = {name for name, path in modules.items()
              if any(i.split(".")[0] == "fakestripe" for i in _imports(path, top_level_only=False))}
    assert naming <= {"worker.demo", "worker.launcher"}, naming
    top = _graph(top_level_only=True)
    for entry in ENTRY_POINTS:
        for name in _reach(top, entry):
            assert not any(i.split(".")[0] == "fakestripe" for i in _imports(modules[name], top_level_only=True)), (
                f"{entry} imports {name}, which imports the fake Stripe")


def test_no_import_cycles() -> None:
    """No module reaches itself through the modules it imports at its top level."""
    graph = _graph(top_level_only=True)
    for name, imported in graph.items():
        back = set().union(*(_reach(graph, m, parents=False) for m in imported)) if imported else set()
        assert name not in back, f"{name} imports itself around a loop"


def _imported_from(path: Path) -> set[str]:
    """The modules named after `from` or `import` (not the names taken from them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_each_concern_is_imported_through_its_entry() -> None:
    """Outside a concern's own package, code imports `shared.access`, never its modules."""
    offenders = []
    for name, path in _modules().items():
        for imported in _imported_from(path):
            for concern in CONCERNS:
                inside = name == concern or name.startswith(f"{concern}.")
                if imported.startswith(f"{concern}.") and not inside:
                    offenders.append(f"{name} imports {imported}")
    assert offenders == []
