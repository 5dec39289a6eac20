"""Event rules with a fake clock: thresholds, `for`, hysteresis, changes, stale, messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.compose.composer import MessageEvent
from gateway.config import GatewayConfig
from gateway.model import Reading
from gateway.rules.triggers import (
    MessageRules,
    ThresholdWatcher,
    Track,
    advance,
)
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.fakeclock import FakeClock

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def config_with(*rules: dict[str, Any]) -> GatewayConfig:
    return validate_config(
        {
            "sensors": [
                {"id": "water_temp", "topic": "t/w", "unit": "°C", "expire_after": "15m"},
                {"id": "bridge", "topic": "t/b", "format": "text"},
                {"id": "soil", "topic": "t/s", "unit": "%"},
            ],
            "rules": [{"text": "x", "publish_to": ["c"], **rule} for rule in rules],
            "publishers": [{"id": "c", "type": "console"}],
        }
    )


class Harness:
    """A watcher over a real StateStore, a fake clock and a list of firings."""

    def __init__(self, *rules: dict[str, Any]) -> None:
        config = config_with(*rules)
        self.clock = FakeClock(T0)
        expire = {s.id: s.expire_after for s in config.sensors if s.expire_after}
        self.state = StateStore(expire)
        self.fired: list[str] = []
        self.watcher = ThresholdWatcher(
            config.rules,
            self.state,
            expire,
            self.clock,
            self.clock,
            lambda rule, event, readings: self.fired.append(rule),
        )
        self.watcher.start()

    def read(self, sensor: str, value: float | str, after: timedelta = timedelta(0)) -> None:
        self.clock.advance(after)
        snap = self.state.update(Reading(sensor, value, "", self.clock.now, "t"))
        self.watcher.on_reading(snap)


def test_advance_is_a_pure_state_machine() -> None:
    hold = timedelta(minutes=10)
    track, fire = advance(Track(), held=True, cleared=False, now=T0, hold=hold)
    assert (track, fire) == (Track("pending", T0), False)
    assert advance(track, True, False, T0 + 5 * MIN, hold) == (track, False)
    assert advance(track, True, False, T0 + 10 * MIN, hold) == (Track("fired", T0 + 10 * MIN), True)
    assert advance(track, False, True, T0 + 5 * MIN, hold) == (Track(), False)
    fired = Track("fired", T0)
    assert advance(fired, True, False, T0, hold) == (fired, False)
    assert advance(fired, False, False, T0, hold) == (fired, False)  # not cleared yet
    assert advance(fired, False, True, T0, hold) == (Track(), False)
    assert advance(Track(), True, False, T0, timedelta(0)) == (Track("fired", T0), True)
    assert advance(Track(), True, False, T0, hold, edge=True) == (Track(), True)


def test_threshold_fires_once_per_crossing() -> None:
    h = Harness({"id": "hot", "when": "water_temp > 30"})
    h.read("water_temp", 29.0)
    assert h.fired == []
    h.read("water_temp", 30.5, MIN)
    h.read("water_temp", 31.0, MIN)
    h.read("water_temp", 32.0, MIN)
    assert h.fired == ["hot"]
    h.read("water_temp", 29.9, MIN)  # false again: re-armed
    h.read("water_temp", 30.1, MIN)
    assert h.fired == ["hot", "hot"]


def test_hysteresis_with_clear_below() -> None:
    h = Harness({"id": "hot", "when": "water_temp > 30", "clear_below": 28})
    h.read("water_temp", 31.0)
    h.read("water_temp", 29.0, MIN)  # below 30 but not below 28: still fired
    h.read("water_temp", 30.5, MIN)
    assert h.fired == ["hot"]
    assert h.watcher.track("hot").phase == "fired"
    h.read("water_temp", 27.5, MIN)
    assert h.watcher.track("hot").phase == "armed"
    h.read("water_temp", 30.5, MIN)
    assert h.fired == ["hot", "hot"]


def test_clear_when_expression() -> None:
    h = Harness({"id": "dry", "when": "soil < 20", "clear_when": "soil > 35"})
    h.read("soil", 18.0)
    h.read("soil", 30.0, MIN)
    h.read("soil", 19.0, MIN)
    assert h.fired == ["dry"]
    h.read("soil", 40.0, MIN)
    h.read("soil", 19.0, MIN)
    assert h.fired == ["dry", "dry"]


def test_for_fires_from_the_timer_without_a_new_reading() -> None:
    h = Harness({"id": "hot", "when": "water_temp > 30", "for": "10m"})
    h.read("water_temp", 31.0)
    assert h.watcher.track("hot").phase == "pending"
    h.clock.advance(9 * MIN)
    assert h.fired == []
    h.clock.advance(MIN)  # no reading: the timer fires at exactly T0 + 10m
    assert h.fired == ["hot"]
    assert h.clock.now == T0 + 10 * MIN
    h.read("water_temp", 31.0, MIN)
    assert h.fired == ["hot"]


def test_for_is_reset_when_the_condition_breaks() -> None:
    h = Harness({"id": "hot", "when": "water_temp > 30", "for": "10m"})
    h.read("water_temp", 31.0)
    h.read("water_temp", 29.0, 5 * MIN)
    assert h.watcher.track("hot").phase == "armed"
    h.read("water_temp", 31.0, MIN)  # a new 10 minutes start now
    h.clock.advance(9 * MIN)
    assert h.fired == []
    h.clock.advance(MIN)
    assert h.fired == ["hot"]
    assert h.clock.pending() == 0  # the cancelled first timer never runs


def test_changes_fires_on_every_change_but_not_on_repeats() -> None:
    h = Harness({"id": "bridge", "when": "changes(bridge)"})
    h.read("bridge", "closed")  # first reading: nothing to compare with
    h.read("bridge", "closed", MIN)
    assert h.fired == []
    h.read("bridge", "open", MIN)
    h.read("bridge", "open", MIN)
    h.read("bridge", "closed", MIN)
    assert h.fired == ["bridge", "bridge"]


def test_changes_to_a_value() -> None:
    h = Harness({"id": "opened", "when": "changes(bridge) and bridge == 'open'"})
    for value in ("closed", "open", "closed", "open"):
        h.read("bridge", value, MIN)
    assert h.fired == ["opened", "opened"]


def test_stale_fires_when_readings_stop_and_rearms_on_a_reading() -> None:
    h = Harness({"id": "quiet", "when": "stale(water_temp)"})
    h.read("water_temp", 25.0)
    h.clock.advance(14 * MIN)
    assert h.fired == []
    h.clock.advance(2 * MIN)  # 15 min without a reading (+ the check margin)
    assert h.fired == ["quiet"]
    h.clock.advance(60 * MIN)
    assert h.fired == ["quiet"]  # once per outage
    h.read("water_temp", 25.0)
    h.clock.advance(16 * MIN)
    assert h.fired == ["quiet", "quiet"]


def test_sensor_that_never_reports_is_stale_after_its_expiry() -> None:
    h = Harness({"id": "quiet", "when": "offline(water_temp)"})
    h.clock.advance(14 * MIN)
    assert h.fired == []
    h.clock.advance(2 * MIN)
    assert h.fired == ["quiet"]


def test_only_rules_reading_the_sensor_are_evaluated() -> None:
    h = Harness(
        {"id": "hot", "when": "water_temp > 30"},
        {"id": "dry", "when": "soil < 20"},
    )
    h.read("soil", 10.0)
    h.read("bridge", "open")
    assert h.fired == ["dry"]
    assert h.watcher.track("hot").phase == "armed"


def test_message_rules_filter_and_pass_the_event() -> None:
    config = config_with(
        {
            "id": "person",
            "on_message": {
                "topic": "frigate/+",
                "when": "event.type == 'new' and event.after.label == 'person'",
            },
            "text": "{{ event.after.label }} on {{ topic }}",
        }
    )
    got: list[tuple[str, MessageEvent | None]] = []
    rules = MessageRules(config.rules, StateStore(), lambda: T0, lambda r, e, s: got.append((r, e)))
    assert rules.topics == ("frigate/+",)
    rules.on_message("frigate/events", b'{"type": "new", "after": {"label": "person"}}')
    rules.on_message("frigate/events", b'{"type": "update", "after": {"label": "person"}}')
    rules.on_message("frigate/events", b'{"type": "new", "after": {"label": "cat"}}')
    rules.on_message("frigate/events", b"not json")
    rules.on_message("other/events", b'{"type": "new", "after": {"label": "person"}}')
    assert got == [
        ("person", MessageEvent("frigate/events", {"type": "new", "after": {"label": "person"}}))
    ]


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"when": "water_temp >"}, "rules[0].when: unexpected end of condition"),
        ({"when": "wter_temp > 3"}, "rules[0].when: unknown sensor 'wter_temp'"),
        ({"when": "stale(soil)"}, "rules[0].when: stale(soil) needs `expire_after`"),
        ({"when": "changes(bridge)", "for": "1m"}, "rules[0]: a `changes()` condition"),
        ({"when": "soil < 3 and water_temp > 3", "clear_below": 2}, "rules[0]: `clear_below`"),
        ({"every": "1h", "for": "1m"}, "rules[0]: `for`, `clear_when`"),
        ({"on_message": {"topic": "x", "when": "label =="}}, "rules[0].on_message.when:"),
        ({"on_message": {"topic": "x", "when": "event.a == 1 and nope"}}, "unknown sensor 'nope'"),
        ({"every": "1h", "require_fresh": ["nope"]}, "rules[0].require_fresh[0]: unknown sensor"),
        ({"every": "1h", "quiet_hours": "23:00"}, "rules[0].quiet_hours: expected HH:MM-HH:MM"),
        ({"every": "1h", "overflow": "wrap"}, "rules[0].overflow:"),
        ({"every": "1h", "jitter": "soon"}, "rules[0].jitter: invalid duration"),
        ({"when": "soil < 3", "jitter": "1m"}, "rules[0]: `jitter` needs `every` or `cron`"),
    ],
)
def test_bad_event_rule_options_are_config_errors_with_paths(
    rule: dict[str, Any], error: str
) -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as info:
        config_with({"id": "r", **rule})
    assert any(line.startswith(error) or error in line for line in info.value.errors), (
        info.value.errors
    )
