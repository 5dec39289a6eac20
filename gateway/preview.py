"""``things-gateway preview RULE``: what a rule would post now, per publisher.

Nothing is published and nothing is written to the outbox.  Sensor values come
from ``--sample FILE`` (a JSON object ``{"sensor_id": value, ...}``); sensors it
does not name render as ``n/a``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from gateway.compose import ComposeError, Composer
from gateway.config import ConfigError, GatewayConfig
from gateway.model import Reading
from gateway.publishers import build_publisher
from gateway.publishers.base import PublisherContext
from gateway.state import StateStore
from gateway.textfit import count_length, fit_text


def load_sample(path: Path, config: GatewayConfig, now: datetime) -> StateStore:
    """A state holding the sample file's values, read at ``now``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: cannot read sample: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: sample must be a JSON object of sensor values"])
    units = {s.id: s.unit for s in config.sensors}
    state = StateStore()
    for sensor, value in data.items():
        if sensor not in units:
            raise ConfigError([f"{path}: {sensor!r} is not a sensor id"])
        if not isinstance(value, int | float | str | bool):
            raise ConfigError([f"{path}: {sensor}: value must be a number, text or boolean"])
        stored = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        state.update(Reading(sensor, stored, units[sensor], now, "sample"))
    return state


def preview_rule(
    config: GatewayConfig, rule_id: str, *, sample: str | None, out: str | None
) -> int:
    """Print the rule's post fitted to each of its publishers; returns an exit code."""
    try:
        rule = config.rule(rule_id)
    except KeyError:
        known = ", ".join(r.id for r in config.rules) or "none"
        print(f"no rule {rule_id!r} (rules: {known})", file=sys.stderr)
        return 2
    now = datetime.now(config.gateway.tz)
    state = load_sample(Path(sample), config, now) if sample else StateStore()
    media_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="things-gateway-preview-"))
    ctx = PublisherContext(config.gateway.resolved_state_dir(), config.gateway.name)
    publishers = {p.id: p for p in config.publishers}
    targets = {pid: build_publisher(publishers[pid], ctx).capabilities for pid in rule.publish_to}
    composer = Composer(config, state, media_dir)
    try:
        post = composer.compose(rule, now, targets)
    except ComposeError as exc:
        print(f"rule {rule_id}: {exc}", file=sys.stderr)
        return 1
    fitted = composer.fit_media(post, targets)
    for pid, caps in targets.items():
        text = fit_text(post.text, caps)
        limit = f"{caps.max_text} {caps.text_counting}" if caps.max_text else "no limit"
        print(f"── {pid} ({publishers[pid].type}): {count_length(text, caps)} / {limit}")
        print(text)
        for item in fitted[pid]:
            print(
                f"image: {item.path} ({item.width}x{item.height}, {item.bytes} bytes)"
                f" alt: {item.alt}"
            )
    return 0
