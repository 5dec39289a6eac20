"""The engine's checks of a config: conditions, cron lines, quiet hours, templates.

The config package checks a file's shape and stays a leaf; what only the engine can
judge is here, in the layer that owns each language (conditions: :mod:`.expr`, cron:
:mod:`.scheduler`, quiet hours: :mod:`.guards`, templates: :mod:`gateway.compose`).
:data:`ENGINE_CHECKS` is handed to :func:`gateway.config.validate_config` by everything
that runs a config (:mod:`gateway.runtime.loading`), so ``check-config``, ``run``,
``reload``, ``preview`` and the demo all report these problems as config errors, each
with its path.
"""

from __future__ import annotations

from collections.abc import Iterator
from zoneinfo import ZoneInfo

from gateway.config import GatewayConfig, RuleConfig
from gateway.rules.expr import calls, names, parse
from gateway.rules.guards import parse_quiet_hours


class EngineChecks:
    """Implements :class:`gateway.config.EngineChecks` with the rule engine and composer."""

    def condition(self, source: str) -> None:
        """Raise ValueError (an ExprError) unless the condition parses."""
        parse(source)

    def cron(self, source: str) -> None:
        """Raise ValueError unless the crontab line is valid."""
        from gateway.rules.scheduler import cron_trigger  # APScheduler: only for cron rules

        cron_trigger(source, ZoneInfo("UTC"))

    def quiet_hours(self, source: str) -> None:
        """Raise ValueError unless the window reads ``HH:MM-HH:MM``."""
        parse_quiet_hours(source)

    def rule_problems(self, rule: RuleConfig) -> Iterator[str]:
        """Options that do not fit the rule's ``when`` condition."""
        if rule.when is None:
            return
        tree = parse(rule.when)
        clears = [
            name
            for name in ("clear_when", "clear_below", "clear_above")
            if getattr(rule, name) is not None
        ]
        if calls(tree, "changes") and (rule.hold is not None or clears):
            yield "a `changes()` condition fires on every change; it takes no `for` or clear_*"
        one_sensor_clear = rule.clear_below is not None or rule.clear_above is not None
        if one_sensor_clear and (len(names(tree)) != 1 or "{" in next(iter(names(tree)))):
            yield (
                "`clear_below`/`clear_above` need a `when` over exactly one sensor"
                " (else clear_when)"
            )

    def config_problems(self, config: GatewayConfig) -> Iterator[str]:
        """Unknown sensors in conditions and require_fresh, then template problems."""
        for r, rule in enumerate(config.rules):
            yield from (f"rules[{r}].{problem}" for problem in _sensor_problems(rule, config))
            yield from (f"rules[{r}].{problem}" for problem in _mention_problems(rule, config))
        yield from _reply_problems(config)
        if not config.rules:
            return  # nothing to check; spares the process jinja2 and the filters
        from gateway.compose.checking import template_problems

        for r, rule in enumerate(config.rules):
            yield from (f"rules[{r}].{problem}" for problem in template_problems(rule, config))


def _mention_problems(rule: RuleConfig, config: GatewayConfig) -> Iterator[str]:
    """``on_mention`` needs conversations on, and publishers that read mentions."""
    if rule.on_mention is None:
        return
    if not config.conversations.enabled:
        yield "on_mention: needs [conversations] enabled = true"
    known = {p.id for p in config.publishers} | {"ask"}
    for i, publisher in enumerate(rule.on_mention.publishers):
        if publisher not in known:
            yield f"on_mention.publishers[{i}]: unknown publisher {publisher!r}"


def _reply_problems(config: GatewayConfig) -> Iterator[str]:
    """``[[replies]]``: template syntax, publishers that exist, at most one fallback;
    no publisher called ``ask`` when MQTT questions are answered (the answers' id)."""
    asks = config.conversations.enabled and config.conversations.mqtt
    if asks:
        for i, publisher in enumerate(config.publishers):
            if publisher.id == "ask":
                yield (
                    f"publishers[{i}].id: 'ask' is the answers to MQTT questions"
                    " ([conversations] mqtt): choose another id"
                )
    if not config.replies:
        return
    import jinja2

    from gateway.compose.composer import make_environment

    env = make_environment()
    known = {p.id for p in config.publishers} | ({"ask"} if asks else set())
    for i, reply in enumerate(config.replies):
        try:
            env.parse(reply.text)
        except jinja2.TemplateSyntaxError as exc:
            yield f"replies[{i}].text: template error: {exc.message} (line {exc.lineno})"
        for j, target in enumerate(reply.publish_to):
            if target not in known:
                yield f"replies[{i}].publish_to[{j}]: unknown publisher {target!r}"
        cameras = {c.id for c in config.cameras}
        for j, image in enumerate(reply.images):
            if image.camera not in cameras:
                yield f"replies[{i}].images[{j}].camera: unknown camera {image.camera!r}"
            for name, source in (("alt", image.alt), ("caption", image.caption)):
                if source is None:
                    continue
                try:
                    env.parse(source)
                except jinja2.TemplateSyntaxError as exc:
                    yield f"replies[{i}].images[{j}].{name}: template error: {exc.message}"
        if not reply.fallback and not reply.match and reply.regex is None:
            yield f"replies[{i}]: needs `match`, `regex` or `fallback = true`"
    if sum(r.fallback for r in config.replies) > 1:
        yield "replies: at most one reply can be the fallback"


def _sensor_problems(rule: RuleConfig, config: GatewayConfig) -> Iterator[str]:
    """Names in conditions and require_fresh that are not sensors of this config (a
    name a ``{capture}`` entry makes, like ``temp_kitchen``, is one)."""
    conditions = [("when", rule.when), ("clear_when", rule.clear_when)]
    if rule.on_message is not None:
        conditions.append(("on_message.when", rule.on_message.when))
    for field, source in conditions:
        if source is None:
            continue
        tree = parse(source)
        for name in sorted(names(tree)):
            if field == "on_message.when" and (name == "event" or name.startswith("event.")):
                continue
            if config.sensor_for(name) is None:
                yield f"{field}: unknown sensor {name!r}"
        for name in sorted(calls(tree, "stale", "offline")):
            spec = config.sensor_for(name)
            if spec is not None and spec.expire_after is None:
                yield f"{field}: stale({name}) needs `expire_after` on sensor {spec.id!r}"
    for i, name in enumerate(rule.require_fresh):
        if config.sensor_for(name) is None:
            yield f"require_fresh[{i}]: unknown sensor {name!r}"


ENGINE_CHECKS = EngineChecks()
"""The checks everything that runs a config validates it with."""
