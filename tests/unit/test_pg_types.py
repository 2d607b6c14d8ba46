from __future__ import annotations

import io
import math
import re
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro

from cdc import avro
from cdc.model import Column, TableSchema
from cdc.sources.postgres._lsn import format_lsn, parse_lsn
from cdc.sources.postgres._types import TypeInfo, mapping_for, parse_array


def conv(oid: int, text: str, typmod: int = -1) -> object:
    m = mapping_for(oid, typmod)
    return text if m.convert is None else m.convert(text)


def test_lsn_round_trip() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert format_lsn(0x16B374D848) == "16/B374D848"


def test_text_conversions() -> None:
    assert conv(16, "t") is True and conv(16, "f") is False
    assert conv(21, "-32768") == -32768
    assert conv(20, "9223372036854775807") == 2**63 - 1
    assert conv(701, "NaN") != conv(701, "NaN")  # NaN
    assert conv(701, "-Infinity") == float("-inf")
    assert conv(17, "\\x00ff10") == b"\x00\xff\x10"
    assert conv(17, "\\x") == b""
    assert conv(17, "a\\\\b\\000\\377") == b"a\\b\x00\xff"  # bytea_output = escape
    assert conv(1082, "1970-01-02") == 1
    assert conv(1082, "1969-12-31") == -1
    assert conv(1114, "1970-01-01 00:00:01.5") == 1_500_000
    assert conv(1114, "1969-12-31 23:59:59.999999") == -1
    assert conv(1114, "2001-02-03 04:05:06.789", 3) == 981173106789
    assert conv(1184, "2024-05-06 05:08:09.123456+00") == "2024-05-06T05:08:09.123456Z"
    assert conv(1184, "2024-05-06 05:08:09+00") == "2024-05-06T05:08:09.000000Z"
    assert conv(1184, "2024-05-06 05:08:09+00", 0) == "2024-05-06T05:08:09Z"
    assert conv(1184, "2024-05-06 07:08:09.5+02:00", 1) == "2024-05-06T05:08:09.5Z"
    assert conv(1184, "-infinity", 3) == "-infinity"
    # Debezium's infinities (pgjdbc's DATE_POSITIVE/NEGATIVE_INFINITY as microseconds), issue 13.4
    assert conv(1114, "infinity", 3) == 9223372036825200
    assert conv(1114, "-infinity") == -9223372036832400000
    assert conv(1114, "294276-12-31 23:59:59.999999") == 2**63 - 2  # saturated
    assert conv(1082, "5874897-12-31") == 2145042905  # the server says so (date - 1970-01-01)
    assert conv(1266, "23:59:59.999999-12") == "11:59:59.999999Z"
    assert conv(1186, "PT0S") == 0
    assert conv(1186, "P-1Y") == -12 * 2_629_800_000_000
    assert conv(790, "($5.00)") == Decimal("-5.00")
    assert conv(790, "1.234,56 €") == Decimal("1234.56")
    assert conv(1083, "13:14:15.25") == (13 * 3600 + 14 * 60 + 15) * 1_000_000 + 250_000
    numeric_12_2 = ((12 << 16) | 2) + 4
    assert conv(1700, "12.5", numeric_12_2) == Decimal("12.50")
    assert conv(1700, "-0.001") == {"scale": 3, "value": b"\xff"}
    big = "9" * 990 + "." + "9" * 10  # beyond the default decimal context's 28 digits
    assert conv(1700, big, ((1000 << 16) | 10) + 4) == Decimal(big)
    assert conv(1700, "-" + big)["scale"] == 10  # type: ignore[index]


def test_unknown_type_is_text() -> None:
    m = mapping_for(999999, -1, "geometry")
    assert m.avro == "string" and m.convert is None and m.name == "geometry"


# --- TYPES.md is true ----------------------------------------------------------------------------

TYPES_MD = Path(__file__).resolve().parents[2] / "sources" / "postgres" / "TYPES.md"

BUILTIN = {
    "smallint": 21,
    "integer": 23,
    "bigint": 20,
    "oid": 26,
    "numeric": 1700,
    "real": 700,
    "double precision": 701,
    "money": 790,
    "boolean": 16,
    "char": 1042,
    "varchar": 1043,
    "text": 25,
    '"char"': 18,
    "name": 19,
    "bytea": 17,
    "date": 1082,
    "time": 1083,
    "timetz": 1266,
    "timestamp": 1114,
    "timestamptz": 1184,
    "interval": 1186,
    "uuid": 2950,
    "json": 114,
    "jsonb": 3802,
    "xml": 142,
    "inet": 869,
    "cidr": 650,
    "macaddr": 829,
    "macaddr8": 774,
    "bit": 1560,
    "varbit": 1562,
    "point": 600,
}
EXTENSION = {"hstore": 90001, "ltree": 90002, "citext": 90003, "tsvector": 3614, "int4range": 3904}


class Catalog:
    """A fake pg_type for the resolver: types are added as the document names them."""

    def __init__(self) -> None:
        self.types: dict[int, TypeInfo] = {
            oid: TypeInfo(oid, name, "b", "U", 0, 0, -1) for name, oid in EXTENSION.items()
        }
        self.next = 100_000

    def add(self, info: TypeInfo) -> int:
        self.types[info.oid] = info
        return info.oid

    def new_oid(self) -> int:
        self.next += 1
        return self.next

    def resolve(self, oid: int) -> TypeInfo | None:
        return self.types.get(oid)

    def column(self, spec: str) -> tuple[int, int]:
        """A type as TYPES.md writes it -> (type oid, column typmod)."""
        if spec.endswith("[]"):
            elem, typmod = self.column(spec[:-2])
            oid = self.new_oid()
            return self.add(TypeInfo(oid, spec, "b", "A", elem, 0, -1)), typmod
        m = re.fullmatch(r"enum (\w+) \((.*)\)", spec)
        if m:
            labels = tuple(x.strip("'") for x in m.group(2).split(","))
            oid = self.new_oid()
            return self.add(TypeInfo(oid, m.group(1), "e", "E", 0, 0, -1, labels)), -1
        m = re.fullmatch(r"domain (\w+) over (.*)", spec)
        if m:
            base, base_typmod = self.column(m.group(2))
            oid = self.new_oid()
            return self.add(TypeInfo(oid, m.group(1), "d", "N", 0, base, base_typmod)), -1
        if spec == "mood":  # an enum named by an earlier row
            return next(o for o, t in self.types.items() if t.name == spec), -1
        if spec in EXTENSION:
            return EXTENSION[spec], -1
        m = re.fullmatch(r"([a-z0-9 ]+|\"char\")(?:\((-?\d+)(?:,(-?\d+))?\))?", spec)
        assert m, f"TYPES.md: cannot read type {spec!r}"
        name, a, b = m.groups()
        oid = BUILTIN[name]
        if a is None:
            return oid, -1
        if name == "numeric":
            return oid, ((int(a) << 16) | (int(b or 0) & 0x7FF)) + 4
        if name in ("char", "varchar"):
            return oid, int(a) + 4
        return oid, int(a)


def short(t: Any) -> str:
    if isinstance(t, str):
        return t
    if t["type"] == "array":
        items = t["items"]
        return f"array<{short(items[1] if isinstance(items, list) else items)}>"
    return str(t["type"])


def rows_of_types_md() -> list[list[str]]:
    rows: list[list[str]] = []
    for line in TYPES_MD.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| PostgreSQL type"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif rows and not line.startswith("|"):
            break  # the end of the type table (later tables are prose)
    return rows


def test_types_md_rows_are_true() -> None:
    rows = rows_of_types_md()
    assert len(rows) > 60
    catalog = Catalog()
    problems = []
    for source, avro_short, connect_name, text, value in rows:
        oid, typmod = catalog.column(source)
        m = mapping_for(oid, typmod, None, catalog.resolve)
        assert text.startswith("`") and text.endswith("`") and value[0] == value[-1] == "`"
        raw = text[1:-1]
        want = eval(value[1:-1], {"Decimal": Decimal, "nan": math.nan, "inf": math.inf})
        got = raw if m.convert is None else m.convert(raw)
        got_name = m.avro.get("connect.name", "—") if isinstance(m.avro, dict) else "—"
        if short(m.avro) != avro_short or got_name != connect_name:
            problems.append(f"{source}: schema {short(m.avro)} {got_name}")
        same = (isinstance(want, float) and math.isnan(want) and math.isnan(got)) or (
            got == want and type(got) is type(want)
        )
        if isinstance(want, Decimal) and same:
            same = got.as_tuple() == want.as_tuple()
        if not same:
            problems.append(f"{source} {raw!r}: converts to {got!r}, TYPES.md says {want!r}")
    assert not problems, "\n".join(problems)


def test_every_documented_value_writes_and_reads_back_with_fastavro() -> None:
    """Schema, converted value, fallback and TOAST placeholder are all valid Avro together."""
    catalog = Catalog()
    for source, _, _, text, _ in rows_of_types_md():
        oid, typmod = catalog.column(source)
        m = mapping_for(oid, typmod, None, catalog.resolve)
        table = TableSchema(
            topic="p.public.t",
            namespace="public",
            table="t",
            columns=(Column("v", m.avro, True, m.name), Column("fallback", m.avro, False, m.name)),
            key=(),
        )
        schema = fastavro.parse_schema(avro.value_record(table))
        raw = text[1:-1]
        values = [raw if m.convert is None else m.convert(raw), m.fallback, m.unavailable]
        for v in values:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, {"v": v, "fallback": m.fallback})
            buf.seek(0)
            back = fastavro.schemaless_reader(buf, schema, None)
            assert isinstance(back, dict)
            if isinstance(v, float) and m.avro == "float":
                v = struct.unpack("<f", struct.pack("<f", v))[0]  # Avro float is 32 bits
            if not (isinstance(v, float) and math.isnan(v)):
                assert back["v"] == v, source


def test_unchanged_toast_placeholders() -> None:
    catalog = Catalog()
    text = mapping_for(*catalog.column("text"), None, catalog.resolve)
    assert text.unavailable == "__debezium_unavailable_value"
    assert mapping_for(17, -1).unavailable == b"__debezium_unavailable_value"
    text_arr = mapping_for(*catalog.column("text[]"), None, catalog.resolve)
    assert text_arr.unavailable == ["__debezium_unavailable_value"]
    int_arr = mapping_for(*catalog.column("integer[]"), None, catalog.resolve)
    assert int_arr.unavailable == list(b"__debezium_unavailable_value")
    hstore = mapping_for(*catalog.column("hstore"), None, catalog.resolve)
    assert hstore.unavailable == '{"__debezium_unavailable_value":"__debezium_unavailable_value"}'
    assert mapping_for(*catalog.column("date[]"), None, catalog.resolve).unavailable is None
    assert mapping_for(*catalog.column("numeric(5,2)"), None, catalog.resolve).unavailable is None
    assert mapping_for(1700, -1).unavailable is None


def test_array_literals() -> None:
    assert parse_array("{}") == []
    assert parse_array("{NULL}") == [None]
    assert parse_array('{"NULL",""}') == ["NULL", ""]
    assert parse_array('{"a\\\\b\\"c","{x,y}",z}') == ['a\\b"c', "{x,y}", "z"]
    assert parse_array('{{"a b",NULL},{c,d}}') == ["a b", None, "c", "d"]
    assert parse_array("[-1:0]={1,2}") == ["1", "2"]
    big = "é" * 100_000
    assert parse_array('{"' + big + '",x}') == [big, "x"]


def test_hstore_to_json() -> None:
    m = mapping_for(90001, -1, None, Catalog().resolve)
    assert m.convert is not None
    assert m.convert("") == "{}"
    assert (
        m.convert('"a\\"b"=>"c\\\\d", "e"=>NULL, "é"=>"=>"')
        == '{"a\\"b":"c\\\\d","e":null,"é":"=>"}'
    )


def test_unknown_resolved_type_is_text() -> None:
    catalog = Catalog()
    oid = catalog.add(TypeInfo(123456, "mycomposite", "c", "C", 0, 0, -1))
    m = mapping_for(oid, -1, None, catalog.resolve)
    assert (m.avro, m.convert, m.name) == ("string", None, "mycomposite")
    assert mapping_for(999, -1, None, lambda oid: None).name == "oid 999"


def test_two_record_columns_define_their_type_once() -> None:
    vsd, point = mapping_for(1700, -1), mapping_for(600, -1)
    table = TableSchema(
        topic="p.public.t",
        namespace="public",
        table="t",
        columns=(
            Column("a", vsd.avro, False, "numeric"),
            Column("b", vsd.avro, True, "numeric"),
            Column("p", point.avro, True, "point"),
            Column("q", point.avro, False, "point"),
        ),
        key=(0, 3),
    )
    fastavro.parse_schema(avro.value_record(table))
    key = avro.key_schema(table)
    assert key is not None
    fastavro.parse_schema(key)


def test_unchanged_toasted_array_takes_the_list_placeholder() -> None:
    from cdc.sources.postgres._relations import Relation, snapshot_row
    from cdc.sources.postgres._tuples import UNCHANGED

    catalog = Catalog()
    maps = [mapping_for(*catalog.column(t), None, catalog.resolve) for t in ("text[]", "numeric")]
    table = TableSchema(
        topic="p.public.t",
        namespace="public",
        table="t",
        columns=tuple(Column(f"c{i}", m.avro, True, m.name) for i, m in enumerate(maps)),
        key=(),
    )
    rel = Relation(1, table, maps, ["c0", "c1"], ())
    row = snapshot_row(rel, [UNCHANGED, UNCHANGED], True)
    assert row == (["__debezium_unavailable_value"], None)
