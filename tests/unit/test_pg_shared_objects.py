"""``cdc validate`` refuses pipelines that would share a Postgres slot or publication
(issue 14 item 4: ``dup.a``, ``dup-a``, ``dup_a`` and ``DUP_A`` all map to ``cdc_dup_a``)."""

from __future__ import annotations

import pytest

from cdc.config import parse
from cdc.errors import ConfigError


def pipeline(name: str, dsn: str = "host=db dbname=shop", **source: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in source.items())
    return (
        f"  - {{name: {name}, source: {{type: postgres, dsn: '{dsn}', tables: [t]{extra}}}, "
        f"sink: {{type: log, path: /tmp/{name}}}}}\n"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse("pipelines:\n" + text)
    return e.value.problems


def test_names_mapping_to_one_slot_and_publication_are_refused_where_they_are() -> None:
    got = problems("".join(pipeline(n) for n in ("dup.a", "dup-a", "dup_a", "DUP_A")))
    assert len(got) == 6, got
    for i in (1, 2, 3):
        assert any(
            p.startswith(
                f"pipelines[{i}].source.slot: replication slot 'cdc_dup_a' on server "
                "db:5432 is also used by pipeline 'dup.a' (pipelines[0])"
            )
            for p in got
        ), got
        assert any(
            p.startswith(
                f"pipelines[{i}].source.publication: publication 'cdc_dup_a' in database 'shop'"
            )
            for p in got
        ), got


def test_an_explicit_slot_or_publication_used_twice_is_refused() -> None:
    got = problems(pipeline("a", slot="s1") + pipeline("b", slot="s1"))
    assert got == [
        "pipelines[1].source.slot: replication slot 's1' on server db:5432 is also used by "
        "pipeline 'a' (pipelines[0]); pipelines sharing one drop or alter each other's: give "
        "'b' a source.slot of its own"
    ]
    got = problems(
        pipeline("a", publication="p") + pipeline("b", "postgresql://u@db/shop", publication="p")
    )
    assert [p.split(":")[0] for p in got] == ["pipelines[1].source.publication"]


def test_the_same_names_on_other_servers_or_databases_are_fine() -> None:
    # slots are per server, publications per database
    parse(
        "pipelines:\n"
        + pipeline("dup.a")
        + pipeline("dup-a", "host=other dbname=shop")
        + pipeline("x", "host=db port=5433 dbname=shop", slot="s")
        + pipeline("y", "host=db dbname=shop", slot="s", publication="p1")
    )
    got = problems(pipeline("a", slot="s") + pipeline("b", "host=db dbname=other", slot="s"))
    assert [p.split(":")[0] for p in got] == ["pipelines[1].source.slot"]
