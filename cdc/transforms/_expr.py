"""The condition language of the ``filter`` transform: parsed by hand, never ``eval``ed.

Grammar (keywords case-insensitive)::

    condition := or
    or        := and ("or" and)*
    and       := not ("and" not)*
    not       := "not" not | test
    test      := "(" or ")" | operand [compare operand | "is" ["not"] "null"
                                      | ["not"] "in" "(" literal ("," literal)* ")"]
    compare   := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    operand   := column | literal
    column    := name ([A-Za-z_][A-Za-z0-9_]*) | "quoted name" (a double-quoted name)
    literal   := number | 'string' ('' for a quote) | true | false | null

Evaluation follows SQL's three-valued logic: a comparison with NULL is unknown, ``not unknown``
is unknown, and a row is kept (``action: keep``) or dropped (``action: drop``) only when the
condition is true. ``parse`` raises ``ExprError`` with the position (0-based character offset);
``compile_condition`` binds column names to row indexes once per table version and raises
``ExprError`` for a column the table lacks or a literal of the wrong kind for its column.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Row = tuple[Any, ...]
Test = Callable[[Row], bool | None]


class ExprError(ValueError):
    """A condition that does not parse, or does not fit a table."""


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any
    pos: int


@dataclass(frozen=True, slots=True)
class Cmp:
    op: str
    left: Col | Lit
    right: Col | Lit


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Col | Lit
    negated: bool


@dataclass(frozen=True, slots=True)
class In:
    operand: Col | Lit
    values: tuple[Lit, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Not:
    inner: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Node, ...]


Node = Cmp | IsNull | In | Not | BoolOp | Col | Lit

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<str>'(?:[^']|'')*')
    | (?P<qname>"(?:[^"]|"")+")
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|<>|!=|==|=|<|>|\(|\)|,)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "is", "null", "in", "true", "false"}
_COMPARE = {
    "=": "==",
    "==": "==",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            rest = text[pos:]
            if not rest.strip():
                break
            at = pos + len(rest) - len(rest.lstrip())
            raise ExprError(f"unexpected character {text[at]!r} at position {at}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        raw = m.group(kind)
        start = m.start(kind)
        if kind == "num":
            value: Any = Decimal(raw) if any(c in raw for c in ".eE") else int(raw)
            out.append(("lit", value, start))
        elif kind == "str":
            out.append(("lit", raw[1:-1].replace("''", "'"), start))
        elif kind == "qname":
            out.append(("col", raw[1:-1].replace('""', '"'), start))
        elif kind == "name":
            low = raw.lower()
            if low in ("true", "false"):
                out.append(("lit", low == "true", start))
            elif low == "null":
                out.append(("null", None, start))
            elif low in _KEYWORDS:
                out.append((low, low, start))
            else:
                out.append(("col", raw, start))
        else:
            out.append(("op", raw, start))
    out.append(("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, Any, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect_op(self, op: str) -> None:
        kind, value, pos = self.take()
        if kind != "op" or value != op:
            raise ExprError(f"expected {op!r} at position {pos}, found {_shown(kind, value)}")

    def parse(self) -> Node:
        node = self.or_()
        kind, value, pos = self.peek()
        if kind != "end":
            raise ExprError(f"unexpected {_shown(kind, value)} at position {pos}")
        return node

    def or_(self) -> Node:
        parts = [self.and_()]
        while self.peek()[0] == "or":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_(self) -> Node:
        parts = [self.not_()]
        while self.peek()[0] == "and":
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def not_(self) -> Node:
        if self.peek()[0] == "not":
            self.take()
            return Not(self.not_())
        return self.test()

    def operand(self) -> Col | Lit:
        kind, value, pos = self.take()
        if kind == "col":
            return Col(value, pos)
        if kind == "lit":
            return Lit(value, pos)
        if kind == "null":
            return Lit(None, pos)
        raise ExprError(
            f"expected a column or a value at position {pos}, found {_shown(kind, value)}"
        )

    def test(self) -> Node:
        kind, value, _ = self.peek()
        if kind == "op" and value == "(":
            self.take()
            node = self.or_()
            self.expect_op(")")
            return node
        left = self.operand()
        kind, value, pos = self.peek()
        if kind == "op" and value in _COMPARE:
            self.take()
            return Cmp(_COMPARE[value], left, self.operand())
        if kind == "is":
            self.take()
            negated = self.peek()[0] == "not"
            if negated:
                self.take()
            k, v, p = self.take()
            if k != "null":
                raise ExprError(f"expected null at position {p}, found {_shown(k, v)}")
            return IsNull(left, negated)
        negated = False
        if kind == "not":
            self.take()
            negated = True
            kind, value, pos = self.peek()
            if kind != "in":
                raise ExprError(f"expected 'in' at position {pos}, found {_shown(kind, value)}")
        if kind == "in":
            self.take()
            self.expect_op("(")
            values = [self.literal()]
            while self.peek()[1] == ",":
                self.take()
                values.append(self.literal())
            self.expect_op(")")
            return In(left, tuple(values), negated)
        return left  # a lone operand: a boolean column or literal

    def literal(self) -> Lit:
        kind, value, pos = self.take()
        if kind == "lit":
            return Lit(value, pos)
        if kind == "null":
            return Lit(None, pos)
        raise ExprError(f"expected a value at position {pos}, found {_shown(kind, value)}")


def _shown(kind: str, value: Any) -> str:
    if kind == "end":
        return "the end"
    if kind == "lit":
        return repr(value) if not isinstance(value, Decimal) else str(value)
    return repr(value)


def parse(text: str) -> Node:
    """The syntax tree of ``text``; ``ExprError`` with the position of the first problem."""
    if not text.strip():
        raise ExprError("empty condition")
    return _Parser(text).parse()


def columns(node: Node) -> list[Col]:
    """Every column ``node`` names, in order of appearance."""
    if isinstance(node, Col):
        return [node]
    if isinstance(node, Cmp):
        return columns(node.left) + columns(node.right)
    if isinstance(node, IsNull | In):
        return columns(node.operand)
    if isinstance(node, Not):
        return columns(node.inner)
    if isinstance(node, BoolOp):
        return [c for p in node.parts for c in columns(p)]
    return []


# --- per table ------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    return "string"


def compile_condition(
    node: Node,
    names: Sequence[str],
    kinds: Sequence[str],
    converters: Sequence[Callable[[Any], Any] | None] = (),
) -> Test:
    """``row -> True / False / None (unknown)`` for rows whose column ``i`` is named
    ``names[i]`` and holds values of kind ``kinds[i]`` (number, string, boolean, or other: only
    ``is null`` applies), taken through ``converters[i]`` when there is one (a non-null value to
    what compares, e.g. Debezium's VariableScaleDecimal record to a ``Decimal``). Raises
    ``ExprError`` naming a missing column or a mismatched value."""
    index = {n: i for i, n in enumerate(names)}

    def operand(o: Col | Lit) -> tuple[Callable[[Row], Any], str]:
        if isinstance(o, Lit):
            v = o.value
            return (lambda r: v), _kind(v)
        i = index.get(o.name)
        if i is None:
            raise ExprError(
                f"unknown column {o.name!r} at position {o.pos} (columns: {', '.join(names)})"
            )
        conv = converters[i] if i < len(converters) else None
        if conv is not None:
            return (lambda r: None if r[i] is None else conv(r[i])), kinds[i]
        return operator.itemgetter(i), kinds[i]

    def same_kind(a: str, b: str, at: int, what: str) -> None:
        if "null" in (a, b):
            return
        if a != b or a == "other":
            raise ExprError(f"cannot compare {what} at position {at}: a {a} with a {b}")

    def build(n: Node) -> Test:
        if isinstance(n, Cmp):
            (lf, lk), (rf, rk) = operand(n.left), operand(n.right)
            same_kind(lk, rk, n.left.pos, "values")
            op = _OPS[n.op]

            def cmp(r: Row) -> bool | None:
                a, b = lf(r), rf(r)
                return None if a is None or b is None else op(a, b)

            return cmp
        if isinstance(n, IsNull):
            f, _ = operand(n.operand)
            neg = n.negated
            return lambda r: (f(r) is None) != neg
        if isinstance(n, In):
            f, k = operand(n.operand)
            for lit in n.values:
                same_kind(k, _kind(lit.value), lit.pos, "in a list")
            values = [lit.value for lit in n.values if lit.value is not None]
            has_null = len(values) < len(n.values)
            neg = n.negated

            def member(r: Row) -> bool | None:
                v = f(r)
                if v is None:
                    return None
                if v in values:
                    return not neg
                return None if has_null else neg

            return member
        if isinstance(n, Not):
            inner = build(n.inner)

            def negate(r: Row) -> bool | None:
                v = inner(r)
                return None if v is None else not v

            return negate
        if isinstance(n, BoolOp):
            parts = [build(p) for p in n.parts]
            if n.op == "and":

                def all_(r: Row) -> bool | None:
                    unknown = False
                    for p in parts:
                        v = p(r)
                        if v is False:
                            return False
                        unknown = unknown or v is None
                    return None if unknown else True

                return all_

            def any_(r: Row) -> bool | None:
                unknown = False
                for p in parts:
                    v = p(r)
                    if v is True:
                        return True
                    unknown = unknown or v is None
                return None if unknown else False

            return any_
        f, k = operand(n)
        if k not in ("boolean", "null"):
            at = n.pos
            raise ExprError(f"a {k} at position {at} is not a condition: compare it with a value")
        return lambda r: f(r)

    return build(node)
