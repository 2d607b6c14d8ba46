"""No import cycles among the modules of cdc/, sources/ and sinks/ (issue 12).

What counts as an import of module A by module B: an ``import``/``from ... import`` that runs
when B is loaded (at module level, in a class body, under ``if``/``try``) and also one under
``if TYPE_CHECKING:``: a type-only import is still a dependency of B on A, and a cycle through it
is the same tangle mypy and readers must untangle. Imports inside a function do not count: they
are how a plugin puts off loading its driver (psycopg, pymysql, a broker client) until it is
opened, and they run after every module involved is loaded.

``from pkg import name`` is an import of the module ``pkg.name`` when there is one, else of
``pkg``. Loading ``pkg.mod`` also loads ``pkg/__init__.py`` first; that implied edge is not
counted (every package that re-exports its modules would be a "cycle" otherwise).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cdc", "sources", "sinks")

# Cycles known when this test was written, in code other branches are rewriting (the Postgres
# split, issue 12 item 2, removed _snapshot <-> _source).
KNOWN: set[frozenset[str]] = set()


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (root / top).rglob("*.py"):  # rglob does not follow cdc/'s symlinks
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if top != "cdc":  # installed as cdc.sources / cdc.sinks (cdc/sources is a symlink)
                parts.insert(0, "cdc")
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports when loaded (see the module docstring)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    todo: list[ast.AST] = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                if f"{mod}.{a.name}" in known:
                    found.add(f"{mod}.{a.name}")
                elif mod in known:
                    found.add(mod)
        todo.extend(ast.iter_child_nodes(node))
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_no_import_cycle_among_cdc_sources_and_sinks() -> None:
    found = set(cycles(graph()))
    new = found - KNOWN
    assert not new, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in new)


def test_the_cycle_finder_sees_a_type_only_cycle_and_ignores_imports_in_functions(
    tmp_path: Path,
) -> None:
    pkg = tmp_path / "sinks" / "demo"
    pkg.mkdir(parents=True)
    (tmp_path / "cdc").mkdir()
    (tmp_path / "sources").mkdir()
    (pkg / "__init__.py").write_text("from cdc.sinks.demo.a import A\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cdc.sinks.demo import b\n"
    )
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "c.py").write_text("def f():\n    from cdc.sinks.demo import d\n")
    (pkg / "d.py").write_text("from cdc.sinks.demo.c import f\n")
    g = graph(tmp_path)
    assert g["cdc.sinks.demo.b"] == {"cdc.sinks.demo.a"}
    assert g["cdc.sinks.demo.c"] == set()
    assert cycles(g) == [frozenset({"cdc.sinks.demo.a", "cdc.sinks.demo.b"})]


def test_the_log_consumers_no_longer_import_the_reader() -> None:
    """Issue 12: sinks/log/_consumers.py <-> _log.py (through _retention too) was a cycle."""
    g = graph()
    assert "cdc.sinks.log._log" not in g["cdc.sinks.log._consumers"]
    assert "cdc.sinks.log._consumers" not in g["cdc.sinks.log._retention"]
