"""Topic, Avro record and Avro field names, as Debezium makes them.

Debezium names things in two steps, and so do we:
- the topic: ``<prefix>.<schema>.<table>`` with every character outside ``[A-Za-z0-9._-]``
  replaced by ``_`` (its topic naming strategy's ``sanitizedTopicName``): Kafka accepts it;
- Avro names, from that topic: the record full names ``<topic>.Value``/``.Key``/``.Envelope`` and
  the field names, with every character Avro does not allow replaced by ``_`` and a leading digit
  prefixed by ``_`` (``schema.name.adjustment.mode`` and ``field.name.adjustment.mode`` set to
  ``avro``, the settings Debezium's documentation gives for the Avro converter).
Java replaces per UTF-16 unit, so a character outside the Basic Multilingual Plane becomes ``__``;
so does ours, to give the same names.
"""

from __future__ import annotations

import re

from cdc.errors import SourceError
from cdc.model import TableSchema

_TOPIC_INVALID = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_INVALID = re.compile(r"[^A-Za-z0-9_]+")
MAX_TOPIC_LENGTH = 249  # Kafka's limit, where Debezium truncates


def _underscores(m: re.Match[str]) -> str:
    return "_" * sum(2 if ord(ch) > 0xFFFF else 1 for ch in m.group())


def topic_name(*parts: str) -> str:
    """The topic of ``parts`` joined by ``.``, as Debezium's default topic naming strategy makes it.

    ``topic_name("shop", "public", "Spaced Table") == "shop.public.Spaced_Table"``. Sources name
    every table's topic with it, so the log, Kafka and NATS all see the same, legal topic.
    """
    topic = _TOPIC_INVALID.sub(_underscores, ".".join(parts))
    if len(topic) > MAX_TOPIC_LENGTH:
        return topic[:MAX_TOPIC_LENGTH]
    return {".": "_", "..": "__"}.get(topic, topic)


def avro_name(part: str) -> str:
    """One Avro name (a field, or one part of a namespace), as Debezium's ``avro`` field-name
    adjustment makes it: characters other than ``[A-Za-z0-9_]`` become ``_``, and a leading digit
    is kept behind an ``_`` (``"1st"`` -> ``"_1st"``, ``"a-b"`` -> ``"a_b"``)."""
    s = _NAME_INVALID.sub(_underscores, part)
    return s if s and not s[0].isdigit() else "_" + s


def avro_namespace(topic: str) -> str:
    """The Avro namespace of the records of ``topic``: each dot-separated part an Avro name.

    Debezium's adjuster works on the full name and so fixes a leading digit of its first part only
    (``"1db.public.t"`` -> ``"_1db.public.t"``), leaving ``"p.public.1t"`` as it is, which is not a
    valid Avro namespace (strict Avro libraries refuse it); ours prefixes every such part with
    ``_`` (``"p.public._1t"``), identical wherever Debezium's name is valid Avro.
    """
    return ".".join(avro_name(p) for p in topic.split("."))


def field_names(table: TableSchema) -> list[str]:
    """The Avro field name of each column of ``table``, in column order.

    Raises ``SourceError`` (not retryable) naming the columns when two of them become the same
    field (``"a b"`` and ``"a_b"`` both become ``a_b``): an Avro record cannot hold two fields of
    one name. Debezium's ``avro`` adjustment refuses such columns as well (it stops the connector
    with a ConnectException); it does not rename them.
    """
    names = [avro_name(c.name) for c in table.columns]
    if len(set(names)) == len(names):
        return names
    clashes: dict[str, list[str]] = {}
    for c, n in zip(table.columns, names, strict=True):
        clashes.setdefault(n, []).append(c.name)
    n, cols = next((n, cols) for n, cols in clashes.items() if len(cols) > 1)
    listed = ", ".join(repr(c) for c in cols)
    raise SourceError(
        f"table {table.qualified}: columns {listed} all become the avro field name {n!r} "
        "(characters other than letters, digits and _ become _); rename all but one of them, "
        "or leave them out with a drop_columns transform (docs/transforms.md)",
        retryable=False,
    )
