"""Topic patterns with captures, filter coverage and the subscriptions made from a config."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

from gateway.ingest.routes import RouteTable
from gateway.ingest.topics import (
    TopicPattern,
    TopicRouter,
    filter_covers,
    is_filter,
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


def _pairwise_minimal(filters: list[str]) -> list[str]:
    """The old quadratic algorithm, kept here as the reference."""
    unique = list(dict.fromkeys(filters))
    return [f for f in unique if not any(g != f and filter_covers(g, f) for g in unique)]


def _random_filter(rng: random.Random) -> str:
    levels = [rng.choice(["a", "b", "c", "+", "$SYS"]) for _ in range(rng.randint(1, 4))]
    levels = [lv if lv != "$SYS" or i == 0 else "a" for i, lv in enumerate(levels)]
    if rng.random() < 0.3:
        levels[-1] = "#"
    return "/".join(levels)


@pytest.mark.parametrize("seed", range(40))
def test_trie_minimal_filters_equal_the_pairwise_ones(seed: int) -> None:
    rng = random.Random(seed)
    filters = [_random_filter(rng) for _ in range(rng.randint(1, 60))]
    assert minimal_filters(filters) == _pairwise_minimal(filters), filters


@pytest.mark.parametrize("seed", range(20))
def test_router_trie_matches_like_topic_matches(seed: int) -> None:
    rng = random.Random(seed)
    filters = [_random_filter(rng) for _ in range(rng.randint(1, 40))]
    router: TopicRouter[int] = TopicRouter()
    for i, filter_ in enumerate(filters):
        router.add(filter_, i)
    for _ in range(50):
        topic = "/".join(
            rng.choice(["a", "b", "c", "$SYS"] if i == 0 else ["a", "b", "c"])
            for i in range(rng.randint(1, 5))
        )
        expected = [i for i, f in enumerate(filters) if not is_filter(f) and f == topic] + [
            i for i, f in enumerate(filters) if is_filter(f) and topic_matches(f, topic)
        ]
        assert router.match(topic) == expected, (filters, topic)


def test_ten_thousand_sensors_subscribe_through_the_trie() -> None:
    """10,000 exact topics under some room wildcards: only the uncovered ones remain
    (the quadratic version took over a minute here, in the MQTT thread)."""
    topics = [f"home/room{i // 10}/sensor{i % 10}" for i in range(10_000)]
    topics += [f"home/room{i}/+" for i in range(0, 1000, 7)] + ["other/#"]
    assert minimal_filters(topics) == _pairwise_minimal_fast_reference(topics)


def _pairwise_minimal_fast_reference(filters: list[str]) -> list[str]:
    # Same answer as the pairwise check for this shape, computed from its structure:
    # "home/roomN/+" covers that room's sensors, nothing else overlaps.
    wild_rooms = {f.split("/")[1] for f in filters if f.endswith("/+")}
    return [f for f in filters if f.endswith(("/+", "#")) or f.split("/")[1] not in wild_rooms]
