"""Issue 14.9: sensors made from captures (``id = "temp_{room}"``) are nameable in
templates (``{{ temp_kitchen }}``) and ``family("temp_{room}")`` goes over them all,
sorted; ``when`` conditions have ``max(...)``/``min(...)`` over a family."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.compose.composer import Composer
from gateway.config import ConfigError, GatewayConfig
from gateway.model import Reading
from gateway.rules.triggers import ThresholdWatcher
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.fakeclock import FakeClock

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def config_with(text: str) -> GatewayConfig:
    return validate_config(
        {
            "sensors": [
                {"id": "temp_{room}", "topic": "home/{room}/temp", "unit": "°C"},
                {"id": "pressure", "topic": "home/pressure", "unit": "hPa"},
            ],
            "rules": [{"id": "r", "text": text, "every": "1h", "publish_to": ["c"]}],
            "publishers": [{"id": "c", "type": "console"}],
        }
    )


def compose(config: GatewayConfig, **values: Any) -> str:
    state = StateStore(windows=config.state.windows)
    for sensor, value in values.items():
        unit = "hPa" if sensor == "pressure" else "°C"
        state.update(Reading(sensor, value, unit, NOW, "t"))
    return Composer(config, state, Path("unused")).compose(config.rules[0], NOW).text


def test_a_captured_name_is_accepted_and_renders() -> None:
    config = config_with("K {{ temp_kitchen }} B {{ temp_bath }} max {{ temp_kitchen.max_24h }}")
    # temp_bath has no reading yet: n/a, like any sensor before its first reading
    assert compose(config, temp_kitchen=21.25) == "K 21.25 °C B n/a max 21.25 °C"


def test_family_goes_over_every_room_sorted() -> None:
    config = config_with(
        '{% for t in family("temp_{room}") %}{{ t.room }}={{ t }}{% if not loop.last %}, '
        "{% endif %}{% endfor %}"
    )
    text = compose(config, temp_kitchen=21.0, temp_attic=25.5, temp_bath=19.25, pressure=1000.0)
    assert text == "attic=25.5 °C, bath=19.25 °C, kitchen=21 °C"


def test_unknown_names_and_families_are_still_refused() -> None:
    with pytest.raises(ConfigError) as info:
        config_with('{{ tmp_kitchen }} {{ family("hum_{room}") }}')
    errors = "\n".join(info.value.errors)
    assert "unknown name 'tmp_kitchen'" in errors
    assert "family() takes the id of a sensor entry with captures" in errors
    assert "'temp_{room}'" in errors


def watcher_with(when: str, **rule: Any) -> tuple[StateStore, ThresholdWatcher, list[str]]:
    config = validate_config(
        {
            "sensors": [{"id": "temp_{room}", "topic": "home/{room}/temp", "unit": "°C"}],
            "rules": [{"id": "r", "when": when, "text": "x", "publish_to": ["c"], **rule}],
            "publishers": [{"id": "c", "type": "console"}],
        }
    )
    clock = FakeClock(NOW)
    state = StateStore()
    fired: list[str] = []
    watcher = ThresholdWatcher(
        config.rules, state, {}, clock, clock, lambda r, e, readings: fired.append(r)
    )
    return state, watcher, fired


def read(state: StateStore, watcher: ThresholdWatcher, sensor: str, value: float) -> None:
    watcher.on_reading(state.update(Reading(sensor, value, "°C", NOW, "t")))


def test_when_over_a_family_any_room_and_every_room() -> None:
    state, watcher, fired = watcher_with("max(temp_{room}) > 30")
    read(state, watcher, "temp_kitchen", 21.0)
    read(state, watcher, "temp_attic", 31.0)  # a room first seen now: it counts
    assert fired == ["r"]
    read(state, watcher, "temp_kitchen", 32.0)  # still some room hot: no new firing
    assert fired == ["r"]
    state, watcher, fired = watcher_with(
        "min(temp_{room}) > 18", clear_when="min(temp_{room}) < 17"
    )
    read(state, watcher, "temp_kitchen", 21.0)
    assert fired == ["r"]  # every room known so far is warm
    read(state, watcher, "temp_bath", 16.0)
    read(state, watcher, "temp_bath", 19.0)
    assert fired == ["r", "r"]
    # the test the config check makes of a name a family entry can make
    state, watcher, fired = watcher_with("temp_kitchen > 30")
    read(state, watcher, "temp_kitchen", 31.0)
    assert fired == ["r"]


def test_a_family_outside_max_or_min_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        watcher_with("temp_{room} > 30")
    assert "goes inside max() or min()" in "\n".join(info.value.errors)
    with pytest.raises(ConfigError) as info:
        watcher_with("max(hum_{room}) > 30")
    assert "unknown sensor 'hum_{room}'" in "\n".join(info.value.errors)
