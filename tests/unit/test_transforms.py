"""The transforms stage (cdc/transforms/) and its configuration, without servers."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from cdc import avro
from cdc.config import parse
from cdc.errors import ConfigError
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.transforms import MASKED, Transformer, transformer

HEAD = """
pipelines:
  - name: shop
    source: {type: postgres, dsn: "host=x dbname=shop", tables: [public.users]}
    sink: {type: log, path: ./x}
    transforms:
"""


def transforms(yaml_list: str) -> Transformer:
    cfg = parse(HEAD + yaml_list).pipelines[0]
    t = transformer(cfg.transforms, cfg.name)
    assert t is not None
    return t


def problems(yaml_list: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(HEAD + yaml_list)
    return e.value.problems


USERS = TableSchema(
    topic="shop.public.users",
    namespace="public",
    table="users",
    columns=(
        Column("id", "int", False, "int4"),
        Column("email", "string", True, "text"),
        Column("ssn", "string", True, "varchar"),
        Column("bio", "string", True, "text"),
        Column("age", "int", True, "int4"),
        Column("doc", avro.JSON, True, "jsonb"),
    ),
    key=(0,),
)
ROW = (1, "ann@example.com", "123-45-6789", "a long biography", 42, '{"a": 1}')
SRC = {"ts_us": 1}


def change(
    table: TableSchema,
    op: Any,
    before: Any = None,
    after: Any = None,
    tx: tuple[str, int, int] | None = None,
) -> RowChange:
    return RowChange(table, op, before, after, SRC, 1, "e", tx)


# --- configuration --------------------------------------------------------------------------------


def test_every_transform_type_parses() -> None:
    cfg = parse(
        HEAD
        + r"""
      - {type: drop_columns, columns: ['public\.users\.bio']}
      - {type: mask_columns, columns: ['.*\.ssn'], chars: 3}
      - {type: hash_columns, columns: 'public\.users\.email', salt: pepper, algorithm: sha-512}
      - {type: truncate_columns, columns: ['.*'], chars: 5}
      - {type: skip_operations, operations: [d, t]}
      - {type: route_topics, regex: 'shop\.public\.orders_(\d+)', replacement: 'shop.orders'}
"""
    ).pipelines[0]
    kinds = [t.type for t in cfg.transforms]
    assert kinds == [
        "drop_columns",
        "mask_columns",
        "hash_columns",
        "truncate_columns",
        "skip_operations",
        "route_topics",
    ]
    hashed: Any = cfg.transforms[2]
    assert hashed.columns == [r"public\.users\.email"]  # one pattern may be a plain string
    assert hashed.algorithm == "SHA-512" and hashed.version == "v1"


def test_no_transforms_means_no_stage() -> None:
    cfg = parse(HEAD.replace("    transforms:\n", "")).pipelines[0]
    assert cfg.transforms == []
    assert transformer(cfg.transforms) is None


def test_config_errors_name_the_path() -> None:
    got = problems(
        r"""
      - {type: drop_columns, columns: ['public\.users\.(bio']}
      - {type: rename_columns, columns: [x]}
      - {type: mask_columns, columns: [x]}
      - {type: route_topics, regex: 'a(b)', replacement: 'x$2'}
      - {type: hash_columns, columns: [x], salt: s3cret-pepper, algorithm: ROT13}
      - {type: skip_operations, operations: [r]}
      - {type: truncate_columns, columns: [x], chars: 3, colour: red}
"""
    )
    assert got[0] == (
        r"pipelines[0].transforms[0].columns: invalid regular expression 'public\.users\.(bio': "
        "missing ), unterminated subpattern at position 15"
    )
    assert got[1] == (
        "pipelines[0].transforms[1]: unknown type 'rename_columns': use one of drop_columns, "
        "mask_columns, hash_columns, truncate_columns, skip_operations, route_topics, filter, "
        "unwrap, outbox"
    )
    assert got[2] == "pipelines[0].transforms[2].chars: required field is missing"
    assert got[3] == (
        "pipelines[0].transforms[3]: replacement 'x$2' refers to group $2 but the regex has "
        "1 group(s)"
    )
    assert got[4].startswith(
        "pipelines[0].transforms[4].algorithm: unknown hash algorithm 'ROT13': use one of MD5, "
    )
    assert got[5].startswith("pipelines[0].transforms[5].operations[0]: bad value: 'r'")
    assert got[6].startswith("pipelines[0].transforms[6].colour: unknown field")
    assert len(got) == 7
    assert not any("s3cret" in p for p in got)


def test_salt_is_never_shown() -> None:
    got = problems("      - {type: hash_columns, columns: [x], salt: [s3cret]}\n")
    assert got == ["pipelines[0].transforms[0].salt: bad value: input should be a valid string"]


# --- column transforms ----------------------------------------------------------------------------


def test_drop_mask_hash_truncate_one_row() -> None:
    t = transforms(
        r"""
      - {type: drop_columns, columns: ['public\.users\.bio']}
      - {type: mask_columns, columns: ['public\.users\.ssn'], chars: 4}
      - {type: hash_columns, columns: ['PUBLIC\.USERS\.EMAIL'], salt: salt, version: v2}
      - {type: truncate_columns, columns: ['public\.users\.(email|doc)'], chars: 10}
"""
    )
    ev = change(USERS, "c", after=ROW)
    t.apply(ChangeBatch([ev], {}))
    out = ev.table
    assert [c.name for c in out.columns] == ["id", "email", "ssn", "age", "doc"]
    # patterns are case-insensitive (as Debezium's); the hash is truncated by the later step
    h = "cd31b3b98ece60cb739c0bf770b2de892ae0ad133f645513c3d83f08757a843a"
    t2 = transforms("      - {type: hash_columns, columns: [.*email], salt: salt, version: v2}\n")
    ev2 = change(USERS, "c", after=(1, "hello", None, None, None, None))
    t2.apply(ChangeBatch([ev2], {}))
    assert ev2.after is not None and ev2.after[1] == h
    assert ev.after is not None
    assert ev.after[0] == 1 and ev.after[2] == "****" and ev.after[3] == 42
    assert len(ev.after[1]) == 10 and ev.after[1] != ROW[1][:10]
    # doc is a Json string, not a plain one: truncating it would break it, so it is left alone
    assert ev.after[4] == '{"a": 1}' and out.columns[4].avro == avro.JSON
    # masked and hashed fields are strings marked as Debezium marks them
    assert MASKED == {"type": "string", "connect.parameters": {"masked": "true"}}
    assert [c.avro for c in out.columns[:3]] == ["int", MASKED, MASKED]
    assert [c.source_type for c in out.columns] == ["int4", "text", "varchar", "int4", "jsonb"]
    assert out.key == (0,) and out.topic == USERS.topic


def test_nulls_stay_null() -> None:
    t = transforms(
        r"""
      - {type: mask_columns, columns: ['.*\.ssn'], chars: 4}
      - {type: hash_columns, columns: ['.*\.email'], salt: s}
      - {type: truncate_columns, columns: ['.*\.bio'], chars: 1}
"""
    )
    ev = change(USERS, "u", before=(1, None, None, None, None, None), after=ROW)
    t.apply(ChangeBatch([ev], {}))
    assert ev.before == (1, None, None, None, None, None)
    assert ev.after is not None and ev.after[2:4] == ("****", "a")


@pytest.mark.parametrize(
    ("algorithm", "version", "value", "digest"),
    [
        # Debezium's own MaskStringsTest expectations, salt "salt"
        (
            "SHA-256",
            "v1",
            "hello",
            "af5843a0f0e728ab0332c8888b6e1190bfb79e584f0d40538de8f10df6ef29c6",
        ),
        (
            "SHA-256",
            "v1",
            "world",
            "4588e1f2dcdc7fefc1515d3acd5acb9033478eace68286f383c337b9ff4464a3",
        ),
        ("MD5", "v1", "hello", "46f48a7a5ea32efba87cbff49d46d35a"),
        ("MD5", "v1", "world", "030f632140d9c9591b0d8c21098024b8"),
        (
            "SHA-256",
            "v2",
            "hello",
            "cd31b3b98ece60cb739c0bf770b2de892ae0ad133f645513c3d83f08757a843a",
        ),
        (
            "SHA-256",
            "v2",
            "world",
            "e84ac3142870113ddc6710c06f76421befc8e8ca6de64e98d2993ed8d41f4085",
        ),
        ("MD5", "v2", "hello", "06decc8b095724f80103712c235586be"),
        ("MD5", "v2", "world", "172c8e95398cc72ab5358ead6981e7e5"),
    ],
)
def test_hash_matches_debezium(algorithm: str, version: str, value: str, digest: str) -> None:
    t = transforms(
        f"      - {{type: hash_columns, columns: [.*email], salt: salt, algorithm: {algorithm}, "
        f"version: {version}}}\n"
    )
    ev = change(USERS, "c", after=(1, value, None, None, None, None))
    t.apply(ChangeBatch([ev], {}))
    assert ev.after is not None and ev.after[1] == digest


def test_hash_v1_java_serialisation_of_unusual_strings() -> None:
    from cdc.transforms._apply import _java_serialized

    # modified UTF-8: NUL as C0 80, a character past the BMP as two 3-byte surrogates
    assert _java_serialized("a\x00") == b"\xac\xed\x00\x05\x74\x00\x03a\xc0\x80"
    assert _java_serialized("\U0001f600") == (
        b"\xac\xed\x00\x05\x74\x00\x06\xed\xa0\xbd\xed\xb8\x80"
    )
    assert _java_serialized("é") == b"\xac\xed\x00\x05\x74\x00\x02\xc3\xa9"
    long = _java_serialized("x" * 70000)
    assert long[:13] == b"\xac\xed\x00\x05\x7c" + (70000).to_bytes(8, "big")


def test_hash_of_a_non_string_column_is_a_string() -> None:
    t = transforms("      - {type: hash_columns, columns: [.*age], salt: s, length: 12}\n")
    ev = change(USERS, "c", after=ROW)
    t.apply(ChangeBatch([ev], {}))
    assert ev.table.columns[4].avro == MASKED and ev.table.columns[4].source_type == "int4"
    assert ev.after is not None and isinstance(ev.after[4], str) and len(ev.after[4]) == 12
    # the same value hashes to the same digest as the string of its text
    t2 = transforms("      - {type: hash_columns, columns: [.*email], salt: s, length: 12}\n")
    ev2 = change(USERS, "c", after=(1, "42", None, None, None, None))
    t2.apply(ChangeBatch([ev2], {}))
    assert ev2.after is not None and ev2.after[1] == ev.after[4]


def test_dropping_a_key_column_is_a_config_error_naming_it() -> None:
    t = transforms(
        r"""
      - {type: mask_columns, columns: [x], chars: 1}
      - {type: drop_columns, columns: ['public\.users\.(id|bio)']}
"""
    )
    with pytest.raises(ConfigError) as e:
        t.apply(ChangeBatch([change(USERS, "c", after=ROW)], {}))
    assert e.value.problems == [
        "pipeline 'shop': transforms[1].columns: column public.users.id is part of the primary "
        "key of public.users and cannot be dropped: narrow the pattern, or use hash_columns on "
        "it instead"
    ]


# --- schemas, keys and the encoder ----------------------------------------------------------------


class Registry:
    def __init__(self) -> None:
        self.schemas: dict[int, Any] = {}
        self.subjects: dict[str, int] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        for sid, known in self.schemas.items():
            if known == schema:
                self.subjects[subject] = sid
                return sid
        sid = len(self.schemas) + 1
        self.schemas[sid] = schema
        self.subjects[subject] = sid
        return sid


SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "t",
    "fields": [{"name": "ts_us", "type": "long"}],
}


def decode(reg: Registry, data: bytes | None) -> Any:
    assert data is not None
    sid, body = avro.unframe(data)
    return fastavro.schemaless_reader(
        io.BytesIO(body), fastavro.parse_schema(reg.schemas[sid]), None
    )


TAGS = TableSchema(
    topic="shop.public.tags",
    namespace="public",
    table="tags",
    columns=(
        Column("note", "string", True, "text"),
        Column("item", "int", False, "int4"),
        Column("tag", "string", False, "text"),
        Column("price", avro.decimal(10, 2), True, "numeric"),
    ),
    key=(1, 2),
)


def test_schema_cached_per_table_version_and_key_follows_it() -> None:
    t = transforms(
        r"""
      - {type: drop_columns, columns: ['public\.tags\.note']}
      - {type: hash_columns, columns: ['public\.tags\.tag'], salt: s, version: v2}
"""
    )
    a = change(TAGS, "c", after=("n", 7, "red", Decimal("1.50")))
    b = change(TAGS, "d", before=("n", 8, "blue", None))
    untouched = change(USERS, "c", after=ROW)
    t.apply(ChangeBatch([a, b, untouched], {}))
    assert a.table is b.table and a.table is not TAGS
    assert untouched.table is USERS and untouched.after is ROW  # no transform applies to it
    assert a.table.key == (0, 1) and [c.name for c in a.table.columns] == ["item", "tag", "price"]
    # a new version of the table gets a new transformed schema, cached in turn
    x = Column("x", "int", True, "int4")
    tags2 = TableSchema(TAGS.topic, "public", "tags", (*TAGS.columns, x), TAGS.key)
    c = change(tags2, "c", after=("n", 9, "green", None, 3))
    d = change(TAGS, "c", after=("n", 10, "pink", None))
    t.apply(ChangeBatch([c], {}))
    t.apply(ChangeBatch([d], {}))
    assert c.table is not a.table and d.table is a.table
    assert t.plan(tags2).table is c.table

    reg = Registry()
    enc = avro.Encoder(reg, SOURCE, None, tombstones=False)
    out = enc.encode(ChangeBatch([a, b, c], {}))
    key_a = decode(reg, out.records[0].key)
    assert list(key_a) == ["item", "tag"] and key_a["item"] == 7
    assert len(key_a["tag"]) == 64 and key_a["tag"] != "red"
    assert decode(reg, out.records[1].key)["item"] == 8
    value_a = decode(reg, out.records[0].value)
    assert value_a["after"] == {"item": 7, "tag": key_a["tag"], "price": Decimal("1.50")}
    key_schema = reg.schemas[reg.subjects["shop.public.tags-key"]]
    assert [(f["name"], f["type"]) for f in key_schema["fields"]] == [
        ("item", "int"),
        ("tag", MASKED),
    ]
    assert enc.fallbacks == 0  # the specialised writers take the transformed schemas
    assert decode(reg, out.records[2].value)["after"]["x"] == 3


def test_route_merges_shards_with_the_key_schema_unchanged() -> None:
    t = transforms(
        r"""
      - {type: route_topics, regex: 'shop\.public\.orders_(\d+)', replacement: 'shop.public.orders'}
      - {type: route_topics, regex: '(shop)\.(.*)', replacement: '$1-copy.$2$$'}
"""
    )

    def shard(n: int) -> TableSchema:
        cols = (Column("id", "long", False, "int8"), Column("v", "string", True, "text"))
        return TableSchema(f"shop.public.orders_{n}", "public", f"orders_{n}", cols, (0,))

    s1, s2 = shard(1), shard(22)
    e1 = change(s1, "c", after=(1, "a"))
    e2 = change(s2, "c", after=(1, "b"))
    row = e1.after
    t.apply(ChangeBatch([e1, e2], {}))
    assert e1.table.topic == e2.table.topic == "shop-copy.public.orders$"
    assert e1.after is row  # a topic-only change rebuilds no row
    assert e1.table.columns == s1.columns and e1.table.key == (0,)
    assert (e1.table.namespace, e1.table.table) == ("public", "orders_1")  # source unchanged
    reg = Registry()
    out = avro.Encoder(reg, SOURCE, None, tombstones=False).encode(ChangeBatch([e1, e2], {}))
    assert out.records[0].key == out.records[1].key  # one key schema id for both shards
    assert sorted(reg.subjects) == [
        "shop-copy.public.orders$-key",
        "shop-copy.public.orders$-value",
    ]
    assert decode(reg, out.records[1].value)["after"] == {"id": 1, "v": "b"}


# --- skipped operations and transaction counts ----------------------------------------------------


def tx_events(tx: str, ops: list[tuple[TableSchema, str]]) -> list[RowChange | TxBoundary]:
    per: dict[str, int] = {}
    out: list[RowChange | TxBoundary] = [TxBoundary("BEGIN", tx, 1, f"{tx}:b")]
    for i, (table, op) in enumerate(ops, 1):
        per[table.qualified] = per.get(table.qualified, 0) + 1
        row = ROW if table is USERS else ("n", i, "t", None)
        out.append(
            change(
                table,
                op,
                before=None if op in ("c", "t") else row,
                after=row if op in ("c", "u") else None,
                tx=(tx, i, per[table.qualified]),
            )
        )
    out.append(TxBoundary("END", tx, 1, f"{tx}:e", len(ops), per))
    return out


def summary(events: list[RowChange | TxBoundary]) -> list[Any]:
    return [
        (e.op, e.tx[1:] if e.tx else None)
        if isinstance(e, RowChange)
        else (e.status, e.event_count, e.per_table)
        for e in events
    ]


def test_skipped_deletes_are_not_counted() -> None:
    t = transforms("      - {type: skip_operations, operations: [d, t]}\n")
    events = tx_events("1", [(USERS, "c"), (TAGS, "d"), (USERS, "d"), (TAGS, "c"), (USERS, "u")])
    events += tx_events("2", [(USERS, "d"), (TAGS, "t")])  # everything skipped
    events += tx_events("3", [(TAGS, "d"), (TAGS, "u")])
    out = t.apply(ChangeBatch(events, {"lsn": 9}))
    assert out.position == {"lsn": 9}
    assert summary(out.events) == [
        ("BEGIN", None, None),
        ("c", (1, 1)),
        ("c", (2, 1)),
        ("u", (3, 2)),
        ("END", 3, {"public.users": 2, "public.tags": 1}),
        # transaction 2: neither BEGIN nor END
        ("BEGIN", None, None),
        ("u", (1, 1)),
        ("END", 1, {"public.tags": 1}),
    ]


def test_transaction_across_batches() -> None:
    t = transforms("      - {type: skip_operations, operations: [d]}\n")
    events = tx_events("1", [(USERS, "d"), (USERS, "d"), (TAGS, "c"), (USERS, "d"), (USERS, "c")])
    # BEGIN and the first (skipped) change in one batch, the rest in the next ones
    b1 = t.apply(ChangeBatch(events[:3], {}))
    assert summary(b1.events) == []
    b2 = t.apply(ChangeBatch(events[3:5], {}))
    assert summary(b2.events) == [("BEGIN", None, None), ("c", (1, 1))]
    b3 = t.apply(ChangeBatch(events[5:], {}))
    assert summary(b3.events) == [("c", (2, 1)), ("END", 2, {"public.tags": 1, "public.users": 1})]


def test_resumed_inside_a_transaction() -> None:
    """After a restart the source resumes mid-transaction without its BEGIN: counting goes on
    from the source's orders (what was skipped before the restart is not known)."""
    t = transforms("      - {type: skip_operations, operations: [d]}\n")
    events = tx_events("1", [(USERS, "c"), (USERS, "c"), (USERS, "d"), (USERS, "c")])
    out = t.apply(ChangeBatch(events[3:], {}))
    assert summary(out.events) == [("c", (3, 3)), ("END", 3, {"public.users": 3})]
    # a batch with only the END of a transaction begun before the restart: unchanged
    t2 = transforms("      - {type: skip_operations, operations: [d]}\n")
    end = tx_events("1", [(USERS, "c"), (USERS, "d")])[-1]
    assert summary(t2.apply(ChangeBatch([end], {})).events) == [("END", 2, {"public.users": 2})]


def test_skip_without_transaction_metadata_and_snapshot_reads() -> None:
    t = transforms("      - {type: skip_operations, operations: [c, u, d, t]}\n")
    events: list[RowChange | TxBoundary] = [
        change(USERS, "r", after=ROW),
        change(USERS, "c", after=ROW),
        change(USERS, "t"),
    ]
    assert [e.op for e in t.apply(ChangeBatch(events, {})).events if isinstance(e, RowChange)] == [
        "r"
    ]


def test_hash_of_bytes_is_over_the_bytes() -> None:
    import hashlib

    from cdc.transforms import hash_function
    from cdc.transforms.config import HashColumns

    for version in ("v1", "v2"):
        cfg = HashColumns.model_validate(
            {"type": "hash_columns", "columns": ["x"], "salt": "s", "version": version}
        )
        assert hash_function(cfg)(b"\x00\xff") == hashlib.sha256(b"s\x00\xff").hexdigest()
        assert hash_function(cfg)(None) is None
