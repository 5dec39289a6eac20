"""Ingest: decoders are total (only DecodeError escapes), and a real broker feeds state."""

from __future__ import annotations

import json
import math
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.simulate import make_frame
from gateway.demo.broker import Broker
from gateway.ingest.decoders import DecodeError, decode_payload
from gateway.ingest.mqtt import MqttIngest, status_topic
from gateway.ingest.topics import TopicRouter, topic_matches
from gateway.media.frames import FrameStore
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.gwutil import base_config, publish, wait_until


@pytest.mark.parametrize(
    ("payload", "fmt", "field", "value"),
    [
        (b"21.5", "number", None, 21.5),
        (b" 21.5 \xc2\xb0C", "number", None, 21.5),
        (b"-3", "number", None, -3.0),
        (b"ON", "bool", None, True),
        (b"off", "bool", None, False),
        (b"1", "bool", None, True),
        (b"open", "text", None, "open"),
        (b'{"DS18B20":{"Temperature":20.6},"TempUnit":"C"}', "json", "DS18B20.Temperature", 20.6),
        (b'{"a":[{"b":1},{"b":"2.5"}]}', "json", "a.1.b", 2.5),
        (b'{"state":"closed"}', "json", "state", "closed"),
        (b'{"contact":false}', "json", "contact", False),
    ],
)
def test_decoders_accept(payload: bytes, fmt: str, field: str | None, value: object) -> None:
    assert decode_payload(payload, fmt, field) == value


@pytest.mark.parametrize(
    ("payload", "fmt", "field", "reason"),
    [
        (b"\xff\xfe", "number", None, "UTF-8"),
        (b"warm", "number", None, "not a number"),
        (b"nan", "number", None, "not finite"),
        (b"inf", "number", None, "not finite"),
        (b"[1, 2]", "json", "a", "not an object"),
        (b'{"a": 1}', "json", "b", "missing"),
        (b'{"a": [1]}', "json", "a.3", "missing"),
        (b'{"a": ', "json", "a", "invalid JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "json", "a", "JSON"),
        (b"maybe", "bool", None, "not a boolean"),
        (b"x" * 300, "text", None, "longer"),
        (b'{"a": NaN}', "json", "a", "not finite|invalid JSON"),
    ],
)
def test_decoders_reject(payload: bytes, fmt: str, field: str | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_payload(payload, fmt, field)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=100).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=5), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda doc: json.dumps(doc).encode()),
    ),
    fmt=st.sampled_from(["number", "bool", "text", "json"]),
    field=st.sampled_from(["a", "a.b", "0", "a.0.b", "Temperature"]),
)
def test_decoders_never_raise_anything_else(
    payload: bytes,
    fmt: str,
    field: str,
) -> None:
    try:
        value = decode_payload(payload, fmt, field)
    except DecodeError:
        return
    assert isinstance(value, float | bool | str)
    if isinstance(value, float):
        assert math.isfinite(value)


@pytest.mark.parametrize(
    ("filter_", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/+", "a/b/c", False),
        ("+/b", "$SYS/b", False),
        ("a/b", "a/b", True),
        ("a/b", "a/bc", False),
    ],
)
def test_topic_matching(filter_: str, topic: str, expected: bool) -> None:
    assert topic_matches(filter_, topic) is expected


def test_router_exact_and_wildcards() -> None:
    router: TopicRouter[str] = TopicRouter()
    router.add("x/temp", "t1")
    router.add("x/+", "any")
    router.add("x/temp", "t2")
    assert router.match("x/temp") == ["t1", "t2", "any"]
    assert router.match("y/temp") == []
    assert router.subscriptions() == ["x/temp", "x/+"]


def test_ingest_from_real_broker(broker: Broker, mqtt_topic: str, tmp_path: Path) -> None:
    toml = (
        base_config(broker, tmp_path)
        + f"""
[[sensors]]
id = "temp"
topic = "{mqtt_topic}/temp"
unit = "°C"

[[sensors]]
id = "door"
topic = "{mqtt_topic}/door"
format = "bool"

[[cameras]]
id = "cam"
topic = "{mqtt_topic}/cam"
"""
    )
    config = validate_config(tomllib.loads(toml))
    state = StateStore()
    frames = FrameStore(tmp_path / "frames", state)
    seen = []
    ingest = MqttIngest(config, state, frames, on_reading=seen.append)
    frames.start()
    ingest.start()
    try:
        assert ingest.ready.wait(10), "never subscribed"
        frame = make_frame(datetime.now(UTC))
        publish(
            broker,
            [
                (f"{mqtt_topic}/temp", "not a number"),
                (f"{mqtt_topic}/temp", "20.5"),
                (f"{mqtt_topic}/temp", "21.0"),
                (f"{mqtt_topic}/door", "OPEN"),
                (f"{mqtt_topic}/cam", frame),
                (f"{mqtt_topic}/cam", b"\x00garbage"),
            ],
        )
        wait_until(
            lambda: state.latest_frame("cam") and (d := state.get("door")) and d.value is True
        )
        temp = wait_until(lambda: (s := state.get("temp")) and s.count == 2 and s)
        assert (temp.value, temp.previous, temp.unit) == (21.0, 20.5, "°C")
        assert state.counters()["temp"].rejected == 1
        assert "not a number" in (state.counters()["temp"].last_error or "")
        stored = state.latest_frame("cam")
        assert stored is not None
        assert stored.path.read_bytes() == frame
        assert (stored.width, stored.height, stored.mime) == (640, 480, "image/jpeg")
        assert frames.rejected == 1
        assert [s.sensor for s in seen] == ["temp", "temp", "door"]
    finally:
        ingest.stop()
        frames.stop()
    assert status_topic(config) == "things-gateway/testgw/status"
