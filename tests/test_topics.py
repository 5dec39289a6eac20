"""Topic patterns with captures, filter coverage and the subscriptions made from a config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.ingest.routes import RouteTable
from gateway.ingest.topics import (
    TopicPattern,
    filter_covers,
    minimal_filters,
    safe_id_part,
    shared,
    topic_matches,
)
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore


@pytest.mark.parametrize(
    ("wide", "narrow", "expected"),
    [
        ("a/+", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),
        ("#", "a/+/c", True),
        ("a/+", "a/+", True),
        ("a/b", "a/+", False),
        ("a/+", "a/#", False),
        ("a/+/c", "a/b/d", False),
        ("+/x", "$SYS/x", False),
        ("a/+", "a/b/c", False),
    ],
)
def test_filter_covers(wide: str, narrow: str, expected: bool) -> None:
    assert filter_covers(wide, narrow) is expected


def test_filter_covers_agrees_with_matching() -> None:
    topics = ["a", "a/b", "a/b/c", "a/x/c", "b/b", "$SYS/b"]
    filters = ["a", "a/b", "a/+", "a/#", "+/b", "#", "a/+/c", "+/+", "$SYS/#"]
    for wide in filters:
        for narrow in filters:
            if filter_covers(wide, narrow):
                for topic in topics:
                    if topic_matches(narrow, topic):
                        assert topic_matches(wide, topic), (wide, narrow, topic)


def test_minimal_filters() -> None:
    assert minimal_filters(["z/bath", "z/+", "z/+/availability", "z/bath/availability", "z/+"]) == [
        "z/+",
        "z/+/availability",
    ]
    assert minimal_filters(["a/b", "c/#", "c/d"]) == ["a/b", "c/#"]


def test_pattern_captures_and_ids() -> None:
    pattern = TopicPattern.parse("sensors/{room}/temperature")
    assert pattern.filter == "sensors/+/temperature"
    assert pattern.captures("sensors/living room/temperature") == {"room": "living room"}
    assert pattern.expand({"room": "hall"}) == "sensors/hall/temperature"
    assert safe_id_part("living room ö") == "living_room_ö"
    assert safe_id_part("***") is None
    assert shared("a/+", "g1") == "$share/g1/a/+"
    assert shared("a/+", None) == "a/+"


def test_subscriptions_of_a_config(tmp_path: Path) -> None:
    config = validate_config(
        tomllib.loads(
            f"""
[gateway]
state_dir = "{tmp_path}"
[[sensors]]
id = "bath"
topic = "zigbee2mqtt/bath"
format = "zigbee2mqtt"
field = "temperature"
[[sensors]]
id = "{{device}}_battery"
topic = "zigbee2mqtt/{{device}}"
format = "zigbee2mqtt"
field = "battery"
[[sensors]]
id = "pool"
topic = "tele/pool/SENSOR"
format = "tasmota"
field = "DS18B20.Temperature"
[[cameras]]
id = "cam"
topic = "cams/front"
"""
        )
    )
    table = RouteTable(config, StateStore())
    assert sorted(table.subscriptions()) == [
        "cams/front",
        "tele/pool/LWT",
        "tele/pool/SENSOR",
        "zigbee2mqtt/+",
        "zigbee2mqtt/+/availability",
    ]
    route = table.route("zigbee2mqtt/bath")
    assert [b.sensor for b in route.sensors] == ["bath", "bath_battery"]
    assert table.route("zigbee2mqtt/bath/availability").availability == ("bath", "bath_battery")
    assert table.route("elsewhere").empty
