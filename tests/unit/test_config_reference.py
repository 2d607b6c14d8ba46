"""The configuration reference (docs/configuration.md) is generated from the config models and
must not drift from them; the hand-written field tables elsewhere name only real fields."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from cdc import configref

ROOT = Path(__file__).resolve().parents[2]


def _all_models() -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [configref.config.Config]
    todo += [m for _, m in configref._plugin_models("source")]
    todo += [m for _, m in configref._plugin_models("sink")]
    todo += configref._transform_models()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        nested: list[type[BaseModel]] = []
        for f in m.model_fields.values():
            configref._type_name(f.annotation, nested)
        todo += nested
    return seen


def test_docs_configuration_md_is_the_generated_reference() -> None:
    on_disk = (ROOT / "docs" / "configuration.md").read_text()
    assert on_disk == configref.reference(), (
        "docs/configuration.md differs from the config models: run "
        "`python -m cdc.configref --write` and commit the result"
    )


def test_every_config_field_has_a_description() -> None:
    missing = [
        f"{m.__name__}.{name}"
        for m in _all_models()
        for name, f in m.model_fields.items()
        if not (f.description or "").strip()
    ]
    assert not missing, f"fields without a description (the reference shows none): {missing}"


def test_field_tables_in_the_docs_name_only_real_fields() -> None:
    # a field's alias is its name in the file (``schema``, which BaseModel itself defines)
    names = {n for m in _all_models() for k, f in m.model_fields.items() for n in (k, f.alias)}
    row = re.compile(r"^\|\s*`([a-z_][a-z0-9_.]*)`\s*\|")
    unknown = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        in_field_table = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("| field"):
                in_field_table = True
                continue
            if not line.startswith("|"):
                in_field_table = False
                continue
            m = row.match(line)
            if in_field_table and m and m.group(1).split(".")[-1] not in names:
                unknown.append(f"{doc.relative_to(ROOT)}:{n}: {m.group(1)}")
    assert not unknown, f"field tables name fields no config model has: {unknown}"


def test_the_reference_covers_every_source_sink_and_transform() -> None:
    text = configref.reference()
    for kind in ("postgres", "mysql"):
        assert f"### Source `type: {kind}`" in text
    for kind in ("log", "kafka", "nats", "postgres", "mysql"):
        assert f"### Sink `type: {kind}`" in text
    for t in configref.transforms_config.TRANSFORM_TYPES:
        assert f"### Transform `type: {t}`" in text
