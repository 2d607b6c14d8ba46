"""The Postgres source's layout (issue 12 item 2): protocol apart from glue, no module past ~500
lines without saying why at its top (import cycles: tests/unit/test_import_cycles.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "sources" / "postgres"
LIMIT = 520  # "about 500"


def _imports() -> dict[str, set[str]]:
    """Module -> the modules of this package it imports (at any level, lazily too)."""
    out: dict[str, set[str]] = {}
    for path in PKG.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module.removeprefix("cdc.")  # installed as cdc.sources.postgres
                if module == "sources.postgres":
                    deps.update(a.name for a in node.names)
                elif module.startswith("sources.postgres."):
                    deps.add(module.rsplit(".", 1)[1])
        out[path.stem] = deps - {path.stem}
    return out


def test_only_the_package_entry_imports_the_glue() -> None:
    users = sorted(m for m, deps in _imports().items() if "_source" in deps)
    assert users == ["__init__"]


def test_the_decoder_names_its_message_types() -> None:
    # pgoutput's message types are named constants (BEGIN = ord("B")), not numbers in the glue
    glue = (PKG / "_source.py").read_text()
    for tag in ("== 66", "== 67", "== 73", "== 82", "== 85", "== 107", "== 119"):
        assert tag not in glue


def test_long_modules_say_why() -> None:
    for path in sorted(PKG.glob("*.py")):
        text = path.read_text()
        if text.count("\n") > LIMIT:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "500 lines" in doc, f"{path.name} is over ~500 lines without saying why"
