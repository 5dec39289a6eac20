"""The template sandbox: Jinja2's, with unsafe attributes refused up front and rendering bounded.

Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` already refuses ``__class__``
and friends when a template runs; :func:`unsafe_attributes` finds them when the
config is checked, so ``check-config`` refuses the template instead of every firing
failing.  :class:`BoundedSandbox` also bounds what one rendering may cost:

- text: no string or list longer than :data:`MAX_TEXT` characters (or items) is made
  by ``*``, ``+``, ``%``, ``**``, ``center``, ``indent``, ``join``, ``replace``,
  ``format`` or the matching ``str`` methods, and the output stops at that size;
- loops: at most :data:`MAX_ITERATIONS` iterations of all ``{% for %}`` loops together;
- time: at most :data:`MAX_SECONDS` of rendering.

Each limit raises :class:`RenderLimitError` with a message saying which was hit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.runtime import Context
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    SandboxedEnvironment,
)

MAX_TEXT = 100_000
"""Longest string (characters) or list (items) a template may make, and its output."""
MAX_ITERATIONS = 100_000
"""Iterations of all loops of one rendering together."""
MAX_SECONDS = 2.0
"""Wall-clock time one rendering may take."""

UNSAFE_NAMES = frozenset(
    UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
    | {"func_globals", "func_code", "func_closure", "f_globals", "f_locals", "f_builtins",
       "f_back", "f_code", "tb_frame", "mro", "im_func", "im_self", "im_class", "gi_code",
       "cr_code", "ag_code", "format_map"}
)  # fmt: skip
"""Attribute names a template may not use (besides every name holding ``__``)."""

_LOOP = "_gateway_bounded_loop"
_BIG_WIDTH = re.compile(r"\d{6,}|\*")
_BIG_FORMAT = re.compile(r"%[-#0 +]*(?:\*|\d{6,})|%[-#0 +]*\d*\.(?:\*|\d{6,})|\{[^}]*\d{6,}")


class RenderLimitError(ValueError):
    """A rendering went over one of the sandbox's bounds; the message names it."""


def is_unsafe_attribute(name: str) -> bool:
    """True for dunder and name-mangled names and the attributes of the classic escapes.

    A single leading underscore is left to Jinja2 (refused as an attribute, allowed
    as a key: ``event._id`` reads a JSON field).
    """
    return "__" in name or name in UNSAFE_NAMES


def unsafe_attributes(ast: nodes.Template) -> Iterator[str]:
    """Every unsafe attribute access of a parsed template, as a message with its line.

    ``x.__class__``, ``x['__globals__']``, ``x | attr('mro')``, and ``attr`` with a name
    that is not a constant (it could be built to be any of them).
    """
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            if not node.args or not isinstance(node.args[0], nodes.Const):
                yield f"the attr filter needs a constant name (line {node.lineno})"
                continue
            name = node.args[0].value
        else:
            continue
        if isinstance(name, str) and is_unsafe_attribute(name):
            yield f"unsafe attribute {name!r} (line {node.lineno})"


class _Budget:
    __slots__ = ("deadline", "iterations")

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_SECONDS
        self.iterations = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitError(f"template took longer than {MAX_SECONDS:g} s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _bounded_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _BUDGET.get()
    if budget is None:  # rendered without render_bounded: still bounded, on its own budget
        budget = _Budget()
    for item in iterable:
        budget.iterations += 1
        if budget.iterations > MAX_ITERATIONS:
            raise RenderLimitError(f"template loops ran more than {MAX_ITERATIONS} times")
        if budget.iterations % 1000 == 0:
            budget.tick()
        yield item


def _size(value: object) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_size(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise RenderLimitError(f"{what} would be longer than {MAX_TEXT} characters or items")


def _check_format(fmt: object) -> None:
    if isinstance(fmt, str) and _BIG_FORMAT.search(fmt):
        raise RenderLimitError("format width or precision too large")


def _check_width(width: object) -> None:
    if isinstance(width, int) and not isinstance(width, bool):
        _check_size(width, "padded text")
    elif isinstance(width, str) and _BIG_WIDTH.search(width):
        raise RenderLimitError("indent too large")


def _replace_size(text: str, old: str, new: str) -> int:
    count = len(text) + 1 if old == "" else text.count(old)
    return len(text) + count * (len(new) - len(old))


def _join_size(items: Iterable[Any], sep: str) -> tuple[list[str], int]:
    parts = [str(item) for item in _bounded_loop(items)]
    return parts, sum(map(len, parts)) + len(sep) * max(0, len(parts) - 1)


def _guard_str_method(name: str, owner: object, args: tuple[Any, ...]) -> None:
    if not isinstance(owner, str):
        return
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_width(args[0])
    elif name == "expandtabs":
        tab = args[0] if args else 8
        _check_size(owner.count("\t") * int(tab) + len(owner), "expanded text")
    elif name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        _check_size(_replace_size(owner, old, new), "replaced text")
    elif name == "join" and args:
        _check_size(_join_size(args[0], owner)[1], "joined text")
    elif name in ("format", "format_map"):
        _check_format(owner)


def _bounded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    center, indent, join = filters["center"], filters["indent"], filters["join"]
    replace, fmt = filters["replace"], filters["format"]

    def bounded_center(value: str, width: int = 80) -> str:
        _check_width(width)
        return str(center(value, width))

    def bounded_indent(value: str, width: int | str = 4, *args: Any, **kwargs: Any) -> str:
        _check_width(width)
        _check_size(
            len(str(value)) * (width if isinstance(width, int) else len(width) + 1), "indent"
        )
        return str(indent(value, width, *args, **kwargs))

    def bounded_join(
        eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None
    ) -> str:
        if attribute is None:
            parts, size = _join_size(value, d)
            _check_size(size, "joined text")
            value = parts
        return str(join(eval_ctx, value, d, attribute))

    def bounded_replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
        _check_size(_replace_size(str(s), str(old), str(new)), "replaced text")
        return str(replace(eval_ctx, s, old, new, count))

    def bounded_format(value: str, *args: Any, **kwargs: Any) -> str:
        _check_format(value)
        return str(fmt(value, *args, **kwargs))

    # both take jinja2's evaluation context first, as the originals do
    bounded_join = pass_eval_context(bounded_join)
    bounded_replace = pass_eval_context(bounded_replace)
    return {
        "center": bounded_center,
        "indent": bounded_indent,
        "join": bounded_join,
        "replace": bounded_replace,
        "format": bounded_format,
    }


class BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with unsafe attribute names refused and every rendering bounded."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        """Options as for :class:`~jinja2.sandbox.SandboxedEnvironment`."""
        super().__init__(**options)
        self.globals[_LOOP] = _bounded_loop
        self.filters.update(_bounded_filters(self.filters))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every {% for %} iterates through _bounded_loop, which counts and checks the time.
        ast = super()._parse(source, name, filename)
        for loop in ast.find_all(nodes.For):
            wrapped = nodes.Call(nodes.Name(_LOOP, "load"), [loop.iter], [], None, None)
            loop.iter = wrapped.set_lineno(loop.lineno)
        return ast

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Jinja2's rule, plus :func:`is_unsafe_attribute` names refused on any object."""
        _tick()
        return not is_unsafe_attribute(attr) and super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """``*``, ``**``, ``%`` and ``+`` refused when the result would be too big."""
        _tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                size = _size(seq)
                if size is not None and isinstance(times, int):
                    _check_size(size * times, "repeated text")
        elif operator == "+":
            left_size, right_size = _size(left), _size(right)
            if left_size is not None and right_size is not None:
                _check_size(left_size + right_size, "joined text")
        elif operator == "%":
            _check_format(left)
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and abs(left).bit_length() * right > 4 * MAX_TEXT
        ):
            raise RenderLimitError("power too large")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Jinja2's sandboxed call, after the time check and the size checks of ``str`` methods."""
        _tick()
        target = getattr(__obj, "__wrapped__", __obj)
        name = getattr(target, "__name__", "")
        _guard_str_method(name, getattr(target, "__self__", None), args)
        return SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)


def render_bounded(template: Any, context: Mapping[str, Any]) -> str:
    """Render a template of a :class:`BoundedSandbox` within the bounds, or raise."""
    token = _BUDGET.set(_Budget())
    try:
        parts: list[str] = []
        size = 0
        for part in template.generate(context):
            size += len(part)
            if size > MAX_TEXT:
                raise RenderLimitError(f"template output longer than {MAX_TEXT} characters")
            parts.append(part)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)
