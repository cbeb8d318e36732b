"""The import graph of `core`: no cycle between modules or between subpackages, the library never
imports the CLI, and every module imports in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"


def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the core modules it imports (anywhere in the file, lazy imports included)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != name and not (mods[t].name == "__init__.py" and name.startswith(t + ".")):
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else mod


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert _cycles(import_graph()) == []


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    pkg_graph: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        pkg_graph.setdefault(_package(mod), set()).update(_package(d) for d in deps if _package(d) != _package(mod))
    assert _cycles(pkg_graph) == []


def test_library_never_imports_the_cli():
    offenders = {m: sorted(d for d in deps if d == "core.cli" or d.startswith("core.cli."))
                 for m, deps in import_graph().items() if not m.startswith("core.cli")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_core_is_organised_in_subpackages():
    flat = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert flat == [], f"modules outside a subpackage: {flat}"


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    mods = sorted(m for m in _modules() if not m.endswith("__main__"))
    code = ("import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except Exception as e:\n        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                         cwd=CORE.parent, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
