"""The condition language of ``when`` rules: parsed safely, evaluated as pure functions.

No ``eval``: a small tokenizer and recursive-descent parser build an immutable tree,
and :func:`evaluate` walks it over an :class:`Facts` lookup.  The grammar::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := operand (("<" | "<=" | ">" | ">=" | "==" | "!=") operand)?
    operand := NUMBER | STRING | "true" | "false" | NAME | FUNC "(" NAME ")"
             | AGG "(" FAMILY ")" | "(" expr ")"
    NAME    := identifier ("." identifier)*        # a sensor id, or event.field.path
    FUNC    := "changes" | "stale" | "offline"
    AGG     := "max" | "min"
    FAMILY  := a sensor id with {captures}, e.g. temp_{room}

``max(temp_{room})`` and ``min(temp_{room})`` go over every sensor made from that
entry (every room): ``max(temp_{room}) > 30`` holds when some room is above 30,
``min(temp_{room}) > 30`` when all are; unknown while none has a number.

``changes(bridge)`` is true on the reading that changed the sensor's value;
``stale(x)`` is true when ``x`` has no fresh reading; ``offline(x)`` also when the
device's availability topic says it is offline (where the state tracks that).
An unknown value (no reading yet, a missing JSON field) makes every comparison
false; a bare name is true only when its value is the boolean ``true``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

Scalar = float | bool | str
FUNCTIONS = frozenset({"changes", "stale", "offline"})
AGGREGATES = frozenset({"max", "min"})
COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})
_KEYWORDS = frozenset({"and", "or", "not", "true", "false"})

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<string>"[^"\\]*"|'[^'\\]*')
      | (?P<name>[A-Za-z_{][A-Za-z0-9_{}]*(?:\.[A-Za-z0-9_]+)*)
      | (?P<op><=|>=|==|!=|<|>)
      | (?P<punct>[()])
    )""",
    re.VERBOSE,
)


class ExprError(ValueError):
    """A condition that cannot be parsed; the message names the position."""


@dataclass(frozen=True, slots=True)
class Const:
    """A literal number, string or boolean."""

    value: Scalar


@dataclass(frozen=True, slots=True)
class Name:
    """A sensor id or a dotted event path."""

    path: str


@dataclass(frozen=True, slots=True)
class Call:
    """``changes(x)``, ``stale(x)`` or ``offline(x)``."""

    func: str
    arg: str


@dataclass(frozen=True, slots=True)
class Family:
    """``max(temp_{room})`` or ``min(temp_{room})``: over every sensor of an entry."""

    func: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Compare:
    """``left OP right``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``a and b and ...`` or ``a or b or ...``."""

    op: str
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``not x``."""

    item: Node


Node = Const | Name | Call | Family | Compare | BoolOp | Not


def _tokens(source: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            col = len(source[pos:]) - len(source[pos:].lstrip()) + pos
            raise ExprError(f"unexpected {source[col]!r} at column {col + 1}")
        kind = match.lastgroup or ""
        start = match.start(kind)
        out.append((kind, match.group(kind), start))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, text: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise ExprError(f"unexpected end of condition{f', expected {text!r}' if text else ''}")
        if text is not None and token[1] != text:
            raise ExprError(f"expected {text!r} at column {token[2] + 1}, got {token[1]!r}")
        self.i += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == text and token[0] in ("name", "op", "punct")

    def parse(self) -> Node:
        if not self.tokens:
            raise ExprError("empty condition")
        node = self.or_()
        token = self.peek()
        if token is not None:
            raise ExprError(f"unexpected {token[1]!r} at column {token[2] + 1}")
        return node

    def or_(self) -> Node:
        return self._chain("or", self.and_)

    def and_(self) -> Node:
        return self._chain("and", self.not_)

    def _chain(self, op: str, parse_item: Callable[[], Node]) -> Node:
        items = [parse_item()]
        while self.at(op):
            self.take()
            items.append(parse_item())
        return items[0] if len(items) == 1 else BoolOp(op, tuple(items))

    def not_(self) -> Node:
        if self.at("not"):
            self.take()
            return Not(self.not_())
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token is not None and token[0] == "op":
            self.take()
            return Compare(token[1], left, self.operand())
        return left

    def operand(self) -> Node:
        kind, text, pos = self.take()
        if kind == "number":
            return Const(float(text))
        if kind == "string":
            return Const(text[1:-1])
        if text == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind != "name" or text in ("and", "or", "not"):
            raise ExprError(f"unexpected {text!r} at column {pos + 1}")
        if text in ("true", "false"):
            return Const(text == "true")
        if text in AGGREGATES and self.at("("):
            self.take("(")
            arg_kind, arg, arg_pos = self.take()
            if arg_kind != "name" or "{" not in arg:
                raise ExprError(
                    f"{text}() needs a sensor family like temp_{{room}}, got {arg!r}"
                    f" at column {arg_pos + 1}"
                )
            self.take(")")
            return Family(text, arg)
        if "{" in text or "}" in text:
            raise ExprError(f"a family like {text} goes inside max() or min() (column {pos + 1})")
        if text in FUNCTIONS and self.at("("):
            self.take("(")
            arg_kind, arg, arg_pos = self.take()
            if arg_kind != "name" or arg in _KEYWORDS:
                raise ExprError(f"{text}() needs a sensor id, got {arg!r} at column {arg_pos + 1}")
            self.take(")")
            return Call(text, arg)
        return Name(text)


def parse(source: str) -> Node:
    """Parse a condition; raises :class:`ExprError` with the column of the problem."""
    return _Parser(source).parse()


def walk(node: Node) -> Iterator[Node]:
    """Every node of a tree, parents first."""
    yield node
    if isinstance(node, Compare):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, BoolOp):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Not):
        yield from walk(node.item)


def names(node: Node) -> set[str]:
    """Every name a condition reads (sensor ids and dotted paths, function arguments too)."""
    found: set[str] = set()
    for sub in walk(node):
        if isinstance(sub, Name):
            found.add(sub.path)
        elif isinstance(sub, Call):
            found.add(sub.arg)
        elif isinstance(sub, Family):
            found.add(sub.pattern)
    return found


def calls(node: Node, *funcs: str) -> set[str]:
    """Arguments of the given functions in a condition, e.g. ``calls(tree, "stale", "offline")``."""
    return {sub.arg for sub in walk(node) if isinstance(sub, Call) and sub.func in funcs}


class Facts(Protocol):
    """What a condition can ask about the world at one moment."""

    def value(self, name: str) -> Scalar | None:
        """The current value of a sensor or event path; None when unknown."""
        ...

    def stale(self, sensor: str) -> bool:
        """True when a sensor has no fresh reading."""
        ...

    def changed(self, sensor: str) -> bool:
        """True when the reading being handled changed this sensor's value."""
        ...

    def offline(self, sensor: str) -> bool:
        """True when a sensor is stale, or its device said it is offline."""
        ...

    def family(self, pattern: str) -> list[Scalar]:
        """The known values of every sensor made from the entry ``pattern``."""
        ...


def _compare(op: str, left: Scalar | None, right: Scalar | None) -> bool:
    if left is None or right is None:
        return False
    numeric = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        if not (isinstance(left, bool) and isinstance(right, bool)) or op not in ("==", "!="):
            return False
    elif isinstance(left, numeric) != isinstance(right, numeric):
        return False
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if isinstance(left, str) or isinstance(right, str):
        return False  # strings are compared for (in)equality only
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _value(node: Node, facts: Facts) -> Scalar | None:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Name):
        return facts.value(node.path)
    if isinstance(node, Family):
        numbers = [
            float(v) for v in facts.family(node.pattern) if isinstance(v, int | float)
            and not isinstance(v, bool)
        ]  # fmt: skip
        if not numbers:
            return None
        return max(numbers) if node.func == "max" else min(numbers)
    return evaluate(node, facts)


def evaluate(node: Node, facts: Facts) -> bool:
    """Evaluate a condition to a boolean (pure: everything it knows comes from ``facts``)."""
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(evaluate(item, facts) for item in node.items)
        return any(evaluate(item, facts) for item in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, facts)
    if isinstance(node, Compare):
        return _compare(node.op, _value(node.left, facts), _value(node.right, facts))
    if isinstance(node, Call):
        if node.func == "changes":
            return facts.changed(node.arg)
        return facts.stale(node.arg) if node.func == "stale" else facts.offline(node.arg)
    if isinstance(node, Name):
        return facts.value(node.path) is True
    if isinstance(node, Family):
        return False  # a number, not a condition
    return node.value is True
