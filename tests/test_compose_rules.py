"""Composition for rules: filters, statistics, events, defused markup, errors, fitted lengths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.compose.composer import ComposeError, Composer, MessageEvent, defuse_markup, render
from gateway.compose.textfit import BLUESKY, MASTODON, X, count_length, find_urls, graphemes
from gateway.config import ConfigError, GatewayConfig
from gateway.model import Reading
from gateway.outbox.store import Outbox
from gateway.rules.runner import RuleRunner, fit_post
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def config_with(text: str, **rule: Any) -> GatewayConfig:
    trigger = {} if "on_message" in rule else {"every": "1h"}
    return validate_config(
        {
            "sensors": [
                {"id": "water_temp", "topic": "t/w", "unit": "°C", "expire_after": "15m"},
                {"id": "bridge", "topic": "t/b", "format": "text"},
            ],
            "rules": [{"id": "r", "text": text, "publish_to": ["c"], **trigger, **rule}],
            "publishers": [{"id": "c", "type": "console"}],
        }
    )


def compose(text: str, state: StateStore | None = None, **rule: Any) -> str:
    config = config_with(text, **rule)
    state = state or StateStore()
    event = rule.get("on_message") and MessageEvent("frigate/events", EVENT)
    post = Composer(config, state, Path("unused")).compose(config.rules[0], NOW, event=event)
    return post.text


EVENT = {"type": "new", "after": {"label": "person", "score": 0.91, "camera": "@door"}}


def state_with(**values: float | str) -> StateStore:
    state = StateStore()
    for sensor, value in values.items():
        state.update(Reading(sensor, value, "°C" if sensor == "water_temp" else "", NOW, "t"))
    return state


def test_value_unit_and_filters() -> None:
    state = state_with(water_temp=24.25)
    state.update(Reading("water_temp", 24.25, "°C", NOW - timedelta(minutes=5), "t"))
    text = compose(
        "{{ water_temp }} | {{ water_temp | round }} | {{ water_temp | number(2) }}"
        " | {{ water_temp.age | duration }} | {{ 1234567.5 | number(1, group=true) }}"
        " | {{ 3725 | duration }} | {{ water_temp.stale }}",
        state,
    )
    # without `precision` the value renders as the device sent it (issue 14.10)
    assert text == "24.25 °C | 24 | 24.25 | 5 min | 1\u202f234\u202f567.5 | 1 h 2 min | False"


def test_value_renders_as_sent_within_a_cap_or_with_its_precision() -> None:
    """Issue 14.10: 21.25 is not shown as 21.2; endless decimals are capped; `precision`
    (already applied at ingest) gives a fixed number of decimals."""
    shown = [
        compose("{{ water_temp }}", state_with(water_temp=value))
        for value in (21.25, 1013.123456789, -0.00001, 21.2, 7.0)
    ]
    assert shown == ["21.25 °C", "1013.1235 °C", "0 °C", "21.2 °C", "7 °C"]
    config = config_with("{{ water_temp }}")
    sensors = [s.model_copy(update={"precision": 2}) for s in config.sensors]
    fixed = config.model_copy(update={"sensors": tuple(sensors)})
    state = state_with(water_temp=21.5)
    post = Composer(fixed, state, Path("unused")).compose(fixed.rules[0], NOW)
    assert post.text == "21.50 °C"


def test_missing_values_and_statistics_render_as_na() -> None:
    text = compose(
        "{{ water_temp }} {{ water_temp.min_24h | number }} {{ water_temp.trend | arrow }}|"
        " {{ bridge.age | duration }}",
        state_with(bridge="open"),
    )
    assert text == "n/a n/a | 0 s"


@dataclass
class Window:
    min: float
    max: float
    mean: float


class StatsState(StateStore):
    """A state offering the rolling-statistics interface issue 3 provides."""

    def stats(
        self, sensor: str, window: timedelta | str, now: datetime | None = None
    ) -> Window | None:
        if window == timedelta(hours=24):
            return Window(18.0, 26.5, 22.0)
        return Window(23.0, 24.0, 23.5)


def test_statistics_and_trend_from_the_state_interface() -> None:
    state = StatsState()
    state.update(Reading("water_temp", 25.0, "°C", NOW, "t"))
    text = compose(
        "{{ water_temp.min_24h }}-{{ water_temp.max_24h }} mean {{ water_temp.mean_1h }}"
        " {{ water_temp.trend }} {{ water_temp | arrow }}",
        state,
    )
    assert text == "18 °C-26.5 °C mean 23.5 °C rising ↑"


def test_event_fields_are_available_to_on_message_templates() -> None:
    text = compose(
        "{{ event.after.label }} ({{ (event.after.score * 100) | round }}%) on {{ topic }}",
        on_message={"topic": "frigate/events"},
    )
    assert text == "person (91%) on frigate/events"


def test_event_names_are_unknown_to_other_rules() -> None:
    with pytest.raises(ConfigError) as info:
        config_with("{{ event.after.label }}")
    assert info.value.errors == [
        "rules[0].text: unknown name 'event' (not a sensor id or now/gateway/rule/family)"
    ]


def test_values_cannot_inject_mentions_or_links() -> None:
    state = state_with(bridge="@admin@evil.example see https://evil.example/x or evil.com")
    text = compose("Bridge: {{ bridge }} @poolcam https://pool.example #pool", state)
    assert "@admin" not in text
    assert "@poolcam https://pool.example #pool" in text  # the template's own markup stays
    assert find_urls(text) == [(text.index("https://pool.example"), text.index(" #pool"))]
    assert text.replace("\u2060", "") == (
        "Bridge: @admin@evil.example see https://evil.example/x or evil.com"
        " @poolcam https://pool.example #pool"
    )
    event_text = compose("{{ event.after.camera }}", on_message={"topic": "x"})
    assert event_text == "@\u2060door"


def test_allow_markup_keeps_values_as_they_are() -> None:
    state = state_with(bridge="@admin https://x.example")
    assert compose("{{ bridge }}", state, allow_markup=True) == "@admin https://x.example"


def test_defuse_markup_is_invisible() -> None:
    for text in ("@a", "a.b.com", "https://x.y/z?q=1", "plain 1.5 text", "mail a@b.example"):
        defused = defuse_markup(text)
        assert defused.replace("\u2060", "") == text
        assert find_urls(defused) == []
        assert "@" not in defused or "@\u2060" in defused


def test_runtime_template_error_is_a_counted_failure_and_no_post(tmp_path: Path) -> None:
    config = config_with("{{ event.after.nope }}", on_message={"topic": "x"})
    outbox = Outbox(tmp_path / "gateway.db")
    runner = RuleRunner(
        config=config,
        composer=Composer(config, StateStore(), tmp_path),
        outbox=outbox,
        capabilities={"c": MASTODON},
        wake=lambda pid: None,
        clock=lambda: NOW,
    )
    assert runner.fire("r", MessageEvent("x", EVENT)) is None
    assert runner.stats["r"].failed == 1
    assert "nope" in (runner.stats["r"].last_error or "")
    assert outbox.history() == []
    with pytest.raises(ComposeError):
        render("{{ 1 / 0 }}", {})


def test_language_is_passed_through() -> None:
    config = config_with("Hallo", language="de")
    post = Composer(config, StateStore(), Path("unused")).compose(config.rules[0], NOW)
    assert post.lang == "de"


values = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=400),
    st.sampled_from(
        [
            "مرحبا بالعالم " * 30,
            "Съешь же ещё этих мягких французских булок " * 12,
            "Zażółć gęślą jaźń " * 25,
            "東京の天気は晴れです。" * 40,
            "👩‍👩‍👧‍👦🏳️‍🌈👍🏽 " * 60,
            "e\u0301\u0301\u0301 " * 100,
            "https://example.com/a/very/long/path?with=query " * 10,
        ]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values, overflow=st.sampled_from(["shorten", "thread"]))
def test_composed_posts_always_fit_every_platform(value: str, overflow: str) -> None:
    state = state_with(bridge=value)
    config = config_with("Bridge: {{ bridge }} #bridge https://bridge.example", overflow=overflow)
    post = Composer(config, state, Path("unused")).compose(config.rules[0], NOW)
    caps = {"mastodon": MASTODON, "bluesky": BLUESKY, "x": X}
    fitted = fit_post(post, caps, overflow)
    for pid, limits in caps.items():
        parts = fitted.threads.get(pid) or [fitted.texts[pid]]
        assert fitted.texts[pid] == parts[0]
        for part in parts:
            assert count_length(part, limits) <= (limits.max_text or 0)
            if limits.max_text_bytes:
                assert len(part.encode()) <= limits.max_text_bytes
            # a URL in a part is a whole URL of the post: never cut
            post_urls = {post.text[a:b] for a, b in find_urls(post.text)}
            for a, b in find_urls(part):
                assert part[a:b] in post_urls
            # every grapheme of a part is a grapheme of the post: nothing split in half
            assert set(graphemes(part)) - set(graphemes(post.text)) <= set(
                graphemes(" …0123456789/")
            )
