"""Checking a rule's templates before they run: syntax, names, filters, tests, attributes.

``check-config``, ``run`` and ``reload`` report every problem found here as a config
error with its path (``rules[2].text: unknown filter 'tme'``), so a template that
would fail each time its rule fires is refused up front.  What a sensor offers a
template is named here too (:data:`SENSOR_ATTRIBUTES`, :func:`stat_names`), so the
check and :class:`~gateway.compose.composer.SensorView` agree by construction.

Light on purpose: jinja2 and the filters, not Pillow or the media code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import jinja2
from jinja2 import meta, nodes

from gateway.compose.filters import FILTERS
from gateway.compose.sandbox import BoundedSandbox, unsafe_attributes

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, RuleConfig

BUILTIN_NAMES = frozenset({"now", "gateway", "rule", "family"})
"""``family("temp_{room}")``: every sensor made from that entry, sorted by id."""
EVENT_NAMES = frozenset({"event", "topic"})
"""Extra names of ``on_message`` rules: the decoded message and its topic (and of
``on_mention`` rules: the mention, and ``mentions/<publisher>``)."""
MENTION_NAMES = frozenset({"mentions"})
"""With ``[conversations]`` on: ``mentions.seen``/``answered``/``skipped`` (24 h) and
``mentions.today`` (seen since local midnight)."""

SENSOR_ATTRIBUTES = frozenset(
    {"id", "value", "unit", "at", "age", "stale", "offline", "previous", "trend", "captured"}
)
"""What every sensor offers a template besides its window statistics."""

STATISTICS = ("min", "max", "mean")
"""The statistics offered for each rolling window: ``min_24h``, ``mean_1h``..."""


def window_labels(window: timedelta) -> tuple[str, ...]:
    """How a window is spelled in attribute names: 1h → ``1h``; 24h → ``24h`` and ``1d``.

    Minutes when the window is not whole hours (90m → ``90m``).
    """
    minutes = int(window.total_seconds()) // 60
    if minutes % 60:
        return (f"{minutes}m",)
    hours = minutes // 60
    return (f"{hours}h", f"{hours // 24}d") if hours % 24 == 0 else (f"{hours}h",)


def stat_names(windows: Iterable[timedelta]) -> dict[str, tuple[str, timedelta]]:
    """Attribute name → (statistic, window) for every statistic of these windows."""
    return {
        f"{stat}_{label}": (stat, window)
        for window in windows
        for label in window_labels(window)
        for stat in STATISTICS
    }


def sensor_attributes(windows: Sequence[timedelta]) -> list[str]:
    """Every attribute of a sensor with these windows, sorted, for messages and docs."""
    return sorted(SENSOR_ATTRIBUTES | stat_names(windows).keys())


_CHECK_ENV = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False)
_CHECK_ENV.filters.update(FILTERS)


def template_sources(rule: RuleConfig) -> list[tuple[str, str]]:
    """Every template of a rule, with the field it is in."""
    sources = [("text", rule.text)]
    if rule.fallback_text is not None:
        sources.append(("fallback_text", rule.fallback_text))
    for i, image in enumerate(rule.images):
        sources.append((f"images[{i}].alt", image.alt))
        if image.caption is not None:
            sources.append((f"images[{i}].caption", image.caption))
    sources += [(f"charts[{i}].alt", chart.alt) for i, chart in enumerate(rule.charts)]
    if rule.timelapse is not None:
        sources.append(("timelapse.alt", rule.timelapse.alt))
        if rule.timelapse.caption:
            sources.append(("timelapse.caption", rule.timelapse.caption))
    if rule.clip is not None:
        sources.append(("clip.alt", rule.clip.alt))
        if rule.clip.caption:
            sources.append(("clip.caption", rule.clip.caption))
    return sources


def template_problems(rule: RuleConfig, config: GatewayConfig) -> list[str]:
    """Every problem in a rule's templates, as ``field: message`` lines (none: fine)."""
    windows = dict(config.sensor_windows())
    known = BUILTIN_NAMES | windows.keys()
    event = rule.on_message is not None or rule.on_mention is not None
    if event:
        known |= EVENT_NAMES
    if config.conversations.enabled:
        known |= MENTION_NAMES
    problems = []
    for field, source in template_sources(rule):
        try:
            ast = _CHECK_ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{field}: template syntax error on line {exc.lineno}: {exc.message}")
            continue
        found = list(_unknown_callables(ast))
        found += _family_problems(ast, config)
        names = _names(source)
        if isinstance(names, str):
            found.append(names)
        else:
            # names a `{capture}` entry can make (temp_kitchen from temp_{room})
            for name in names - known:
                spec = config.sensor_for(name)
                if spec is not None:
                    windows[name] = windows[spec.id]
            found += [_unknown(name, event) for name in sorted(names - known - windows.keys())]
        found += _unknown_attributes(ast, windows)
        found += unsafe_attributes(ast)
        problems += [f"{field}: {message}" for message in found]
    return problems


def _unknown_callables(ast: nodes.Template) -> Iterator[str]:
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        kind, table = (
            ("filter", _CHECK_ENV.filters)
            if isinstance(node, nodes.Filter)
            else ("test", _CHECK_ENV.tests)
        )
        if node.name not in table:
            yield f"unknown {kind} {node.name!r} (line {node.lineno})"


def _family_problems(ast: nodes.Template, config: GatewayConfig) -> Iterator[str]:
    entries = [s.id for s in config.sensors if s.captures]
    for node in ast.find_all(nodes.Call):
        if not (isinstance(node.node, nodes.Name) and node.node.name == "family"):
            continue
        args = node.args
        if len(args) != 1 or not isinstance(args[0], nodes.Const) or args[0].value not in entries:
            yield (
                f"family() takes the id of a sensor entry with captures (line {node.lineno}):"
                f" {', '.join(repr(e) for e in entries) or 'none in this config'}"
            )


def _unknown(name: str, event: bool) -> str:
    return f"unknown name {name!r} (not a sensor id or now/gateway/rule/family" + (
        "/event/topic)" if event else ")"
    )


def _names(source: str) -> set[str] | str:
    """The template's free names, or the problem that stops jinja2 finding them."""
    # jinja2's analysis compiles the template, which fails on an unknown filter or
    # test (reported already): stand-ins for those let it find the unknown names too.
    env = _CHECK_ENV.overlay()
    env.filters, env.tests = dict(env.filters), dict(env.tests)  # overlay() shares them
    ast = env.parse(source)
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        table = env.filters if isinstance(node, nodes.Filter) else env.tests
        table.setdefault(node.name, _stand_in)
    try:
        return set(meta.find_undeclared_variables(ast))
    except jinja2.TemplateError as exc:  # anything else jinja2 refuses to compile
        return f"template error: {exc.message}"


def template_names(source: str) -> set[str]:
    """The free names of a template (empty when it does not compile)."""
    found = _names(source)
    return set() if isinstance(found, str) else found


def _stand_in(value: object, *args: object, **kwargs: object) -> object:
    return value


def _unknown_attributes(
    ast: nodes.Template, windows: dict[str, tuple[timedelta, ...]]
) -> Iterator[str]:
    # Only ``sensor.attr`` straight on a sensor's name: after a filter or a {% set %}
    # the value is no longer known here, and a rename would be a false alarm.
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = _attribute_of(node)
        target = getattr(node, "node", None)
        if attr is None or not isinstance(target, nodes.Name) or target.name not in windows:
            continue
        if target.name in assigned:
            continue
        allowed = sensor_attributes(windows[target.name])
        if attr not in allowed:
            yield (
                f"sensor {target.name!r} has no attribute {attr!r} (line {node.lineno});"
                f" it has {', '.join(allowed)}"
            )


def _attribute_of(node: nodes.Node) -> str | None:
    """``x.name`` or ``x['name']``: the name; None for any other lookup."""
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    arg = getattr(node, "arg", None)
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        return arg.value
    return None
