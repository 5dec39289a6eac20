"""``things-gateway preview RULE``: what a rule would post now, per publisher.

Nothing is published and nothing is written to the outbox.  Sensor values come
from ``--sample FILE`` (a JSON object ``{"sensor_id": value, ...}``; sensors it does
not name render as ``n/a``), else from the last state the daemon saved
(``<state_dir>/state.json``, see :mod:`gateway.state.snapshot`).  Charts and the
rolling statistics (``.min_24h``, ``.mean_1h``, ``.trend``) come from the readings
history the daemon keeps in ``<state_dir>/gateway.db``, as in the daemon: the windows
are rebuilt from its per-minute rows.  ``on_message`` rules take the message from
``--event FILE`` (JSON).  Guards are not applied: the preview shows what the rule
*would* say.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from gateway.compose.composer import ComposeError, Composer, MessageEvent
from gateway.compose.textfit import count_length
from gateway.config import AnyPublisherConfig, ConfigError, GatewayConfig, RuleConfig
from gateway.media.fonts import glyph_warnings
from gateway.model import MediaItem, Reading
from gateway.publishers import build_publisher
from gateway.publishers.base import Capabilities, PublisherContext
from gateway.rules.runner import fit_posts, video_fallback
from gateway.rules.triggers import decode_event
from gateway.runtime.paths import database_path
from gateway.state.history import HistoryStore
from gateway.state.snapshot import SNAPSHOT_NAME, rebuild_windows, restore_state
from gateway.state.store import StateStore


def load_sample(path: Path, config: GatewayConfig, now: datetime) -> StateStore:
    """A state holding the sample file's values, read at ``now``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: cannot read sample: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: sample must be a JSON object of sensor values"])
    units = {s.id: s.unit for s in config.sensors}
    state = _empty_state(config)
    for sensor, value in data.items():
        if sensor not in units:
            raise ConfigError([f"{path}: {sensor!r} is not a sensor id"])
        if not isinstance(value, int | float | str | bool):
            raise ConfigError([f"{path}: {sensor}: value must be a number, text or boolean"])
        stored = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        state.update(Reading(sensor, stored, units[sensor], now, "sample"))
    return state


def load_event(path: Path, topic: str) -> MessageEvent:
    """The ``--event FILE`` message for an ``on_message`` rule."""
    try:
        return MessageEvent(topic, decode_event(path.read_bytes()))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read event: {exc.strerror}"]) from None


def _empty_state(config: GatewayConfig) -> StateStore:
    """A state shaped like the daemon's: the same expiries and statistics windows."""
    state = StateStore(
        {s.id: s.expire_after for s in config.sensors if s.expire_after},
        windows=config.state.windows,
    )
    for sensor in config.sensors:
        state.register(sensor.id, windows=sensor.windows)
    return state


def open_history(config: GatewayConfig, state: StateStore, now: datetime) -> HistoryStore | None:
    """The daemon's readings history, with ``state``'s windows rebuilt from it.

    None (and a note) when the daemon has not made its database yet.
    """
    path = database_path(config)
    if not path.is_file():
        print(f"(no readings history at {path}: charts say no data)", file=sys.stderr)
        return None
    history = HistoryStore(path, state)
    rebuild_windows(history, state, [s.id for s in config.sensors], now)
    return history


def _restored(config: GatewayConfig, now: datetime) -> tuple[StateStore, HistoryStore | None]:
    """The state as the daemon restores it at start (:func:`restore_state`)."""
    state = _empty_state(config)
    path = database_path(config)
    history = HistoryStore(path, state) if path.is_file() else None
    if history is None:
        print(f"(no readings history at {path}: charts say no data)", file=sys.stderr)
    if restore_state(config, state, history, now).snapshot is None:
        saved = config.gateway.resolved_state_dir() / SNAPSHOT_NAME
        print(f"(no saved state at {saved}: sensors show n/a; use --sample FILE)", file=sys.stderr)
    return state, history


def preview_rule(
    config: GatewayConfig,
    rule_id: str,
    *,
    sample: str | None,
    out: str | None,
    event: str | None = None,
) -> int:
    """Print the rule's post fitted to each of its publishers; returns an exit code."""
    try:
        rule = config.rule(rule_id)
    except KeyError:
        known = ", ".join(r.id for r in config.rules) or "none"
        print(f"no rule {rule_id!r} (rules: {known})", file=sys.stderr)
        return 2
    for warning in glyph_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    now = datetime.now(config.gateway.tz)
    if sample:
        state = load_sample(Path(sample), config, now)
        history = open_history(config, state, now)
    else:
        state, history = _restored(config, now)
    try:
        return _preview(config, rule, state, history, now, out=out, event=event)
    finally:
        if history is not None:
            history.close()


def _preview(
    config: GatewayConfig,
    rule: RuleConfig,
    state: StateStore,
    history: HistoryStore | None,
    now: datetime,
    *,
    out: str | None,
    event: str | None,
) -> int:
    rule_id = rule.id
    message = None
    if rule.on_message is not None:
        message = load_event(Path(event), rule.on_message.topic) if event else None
        if message is None:
            print(f"rule {rule_id} fires on messages: give one with --event FILE", file=sys.stderr)
            return 2
    media_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="things-gateway-preview-"))
    ctx = PublisherContext(config.gateway.resolved_state_dir(), config.gateway.name)
    publishers = {p.id: p for p in config.publishers}
    targets = {
        pid: caps
        for pid in rule.publish_to
        if (caps := _capabilities(publishers[pid], ctx)) is not None
    }
    composer = Composer(config, state, media_dir, history=history)
    try:
        post = composer.compose(rule, now, targets, event=message)
    except ComposeError as exc:
        print(f"rule {rule_id}: {exc}", file=sys.stderr)
        return 1
    media = composer.fit_media(post, targets)
    kept, posts = video_fallback(rule, post, targets, media)
    fitted = fit_posts(posts, kept, rule.overflow)
    videos = [item for item in post.media if item.is_video]
    for item in videos:
        print(f"video: {item.path} ({video_figures(item)})")
    for pid in [p for p in targets if p not in kept]:
        print(f"{pid} ({publishers[pid].type}): no post: it takes no video (video_fallback)")
    for pid, caps in kept.items():
        parts = fitted.threads.get(pid) or [fitted.texts[pid]]
        _print_target(f"{pid} ({publishers[pid].type})", caps, parts, media[pid])
        if videos:
            print(f"video budget: {video_budget(caps)}")
    return 0


def _capabilities(config: AnyPublisherConfig, ctx: PublisherContext) -> Capabilities | None:
    """A publisher's limits, or None (said on stdout) when its optional library is
    not installed: the preview goes on for the others."""
    missing = config.missing_dependencies()
    if missing:
        print(f"── {config.id} ({config.type}): not previewed: {'; '.join(missing)}")
        return None
    return build_publisher(config, ctx).capabilities


def preview_mention(config: GatewayConfig, text: str, *, sample: str | None) -> int:
    """Print the reply each publisher that reads mentions would send to one saying
    ``text`` (from a reader called "asker"), fitted to it; the safety checks that
    depend on who asks and when (caps, cooldown, quiet hours) are not applied."""
    from gateway.compose.textfit import fit_text
    from gateway.conversations.answering import ASK_PUBLISHER, Conversations
    from gateway.conversations.inbox import Inbox
    from gateway.model import Mention
    from gateway.outbox.store import Outbox

    if not config.conversations.enabled:
        print("conversations are off: set [conversations] enabled = true", file=sys.stderr)
        return 2
    now = datetime.now(config.gateway.tz)
    if sample:
        state, history = load_sample(Path(sample), config, now), None
    else:
        state, history = _restored(config, now)
    ctx = PublisherContext(config.gateway.resolved_state_dir(), config.gateway.name)
    readers: dict[str, tuple[str, Capabilities]] = {}
    for p in config.publishers:
        if not p.enabled or p.missing_dependencies():
            continue  # a disabled publisher reads no mentions (nor one it cannot build)
        publisher = build_publisher(p, ctx)
        if callable(getattr(publisher, "read_mentions", None)):
            readers[p.id] = (p.type, publisher.capabilities)
    if config.conversations.mqtt:
        readers[ASK_PUBLISHER] = ("mqtt question", Capabilities())
    scratch = Path(tempfile.mkdtemp(prefix="things-gateway-preview-"))
    composer = Composer(config, state, scratch, history=history)
    names = RuleConfig.model_validate(
        {"id": "reply", "text": "-", "every": "1h", "publish_to": ["-"]}
    )
    inbox, outbox = Inbox(scratch / "preview.db"), Outbox(scratch / "preview.db")
    try:
        conversations = Conversations(
            config.conversations,
            config.replies,
            inbox,
            outbox,
            context=lambda when: composer.context(names, when),
        )
        reply = conversations.match(text)
        if reply is None:
            print("no reply matches and none is the fallback: the mention is skipped (no match)")
            return 0
        print(f"reply {reply.id}" + (" (the fallback)" if reply.fallback else ""))
        if not readers:
            print("no publisher reads mentions (mastodon, or [conversations] mqtt)")
        for pid, (kind, caps) in readers.items():
            mention = Mention(pid, "preview", "asker", text, now, author_name="Asker")
            texts = conversations.render(reply, mention, now.timestamp())
            for target, body in texts.items():
                shown = readers.get(target, (kind, caps))
                name = f"{pid} ({kind})" + (f" → {target}" if target != pid else "")
                _print_target(name, shown[1], [fit_text(body, shown[1])], ())
    except ComposeError as exc:
        print(f"reply: {exc}", file=sys.stderr)
        return 1
    finally:
        inbox.close()
        outbox.close()
        if history is not None:
            history.close()
    return 0


def video_figures(item: MediaItem) -> str:
    """A video's size, bytes, duration and frame rate, as preview prints them."""
    duration = f"{item.duration:.2f} s" if item.duration is not None else "? s"
    fps = f" at {item.fps:g} fps" if item.fps is not None else ""
    return f"{item.width}x{item.height}, {item.bytes} bytes, {duration}{fps}"


def video_budget(caps: Capabilities) -> str:
    """A publisher's video limits in words (or that it gets the poster frame)."""
    limits = caps.video
    if limits is None:
        return "takes no video: gets the poster frame"
    parts = [
        f"{limits.max_bytes} bytes" if limits.max_bytes is not None else None,
        f"{limits.max_duration:g} s" if limits.max_duration is not None else None,
        f"side {limits.max_side}" if limits.max_side is not None else None,
        f"{limits.max_pixels} pixels" if limits.max_pixels is not None else None,
        f"{limits.max_fps:g} fps" if limits.max_fps is not None else None,
    ]
    named = [p for p in parts if p]
    alone = "; one video per post, nothing beside it" if limits.alone else ""
    return ("at most " + ", ".join(named) if named else "no limit") + alone


def _print_target(
    name: str, caps: Capabilities, parts: list[str], media: tuple[MediaItem, ...]
) -> None:
    """One publisher's fitted text (or thread parts) with counted length, then its images."""
    limit = f"{caps.max_text} {caps.text_counting}" if caps.max_text else "no limit"
    for n, text in enumerate(parts, 1):
        where = f" part {n}/{len(parts)}" if len(parts) > 1 else ""
        print(f"── {name}{where}: {count_length(text, caps)} / {limit}")
        print(text)
    for item in media:
        if item.is_video:
            print(f"video: {item.path} ({video_figures(item)}) alt: {item.alt}")
            continue
        size = f"{item.width}x{item.height}, {item.bytes} bytes"
        print(f"image: {item.path} ({size}) alt: {item.alt}")
