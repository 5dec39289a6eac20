"""The whole message handler (``MqttIngest.handle``) without a network: formats, captures,
transforms, availability, bad input, and a property test that nothing raises."""

from __future__ import annotations

import base64
import json
import math
import threading
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.simulate import make_frame
from gateway.config import GatewayConfig
from gateway.ingest.decoders import DecodeError, from_document, parse_json_std
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.model import Frame
from gateway.runtime.loading import validate_config
from gateway.state.store import SensorSnapshot, StateStore

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

SENSORS = """
[[sensors]]
id = "temp_{room}"
topic = "home/{room}/temperature"
unit = "°C"
precision = 1
range = [-40, 80]
max_instances = 3

[[sensors]]
id = "pool"
topic = "tele/pool/SENSOR"
format = "tasmota"
field = "DS18B20.Temperature"

[[sensors]]
id = "power_{device}"
topic = "tele/{device}/SENSOR"
format = "tasmota"
field = "ENERGY.Power"
unit = "W"

[[sensors]]
id = "{device}_temp"
topic = "zigbee2mqtt/{device}"
format = "zigbee2mqtt"
field = "temperature"
unit = "°C"

[[sensors]]
id = "{device}_battery"
topic = "zigbee2mqtt/{device}"
format = "zigbee2mqtt"
field = "battery"
unit = "%"

[[sensors]]
id = "tank"
topic = "tank/level/raw"
scale = 0.1
offset = -2
precision = 2

[[sensors]]
id = "door"
topic = "doors/+/contact"
format = "bool"

[[sensors]]
id = "deep"
topic = "data/#"
format = "json"
field = "a.0.b"

[[cameras]]
id = "cam"
topic = "cams/front"
"""


def make_config(tmp_path: Path, extra: str = "", sensors: str = SENSORS) -> GatewayConfig:
    text = f"""
[gateway]
name = "unit"
state_dir = "{tmp_path}"

[mqtt]
max_sensor_payload_bytes = 32768
{extra}
{sensors}
"""
    return validate_config(tomllib.loads(text))


class Harness:
    """An ingest with real state and a real (not started) frame store."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.state = StateStore()
        self.frames = FrameStore(tmp_path / "frames", self.state)
        self.seen: list[SensorSnapshot] = []
        self.ingest = MqttIngest(
            make_config(tmp_path, extra), self.state, self.frames, self.seen.append
        )

    def send(self, topic: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.ingest.handle(topic, data, AT)

    def value(self, sensor: str) -> object:
        snap = self.state.get(sensor)
        return None if snap is None else snap.value


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_captures_make_one_sensor_per_level_up_to_max_instances(harness: Harness) -> None:
    for room, value in [("kitchen", "21.46"), ("living room", "19 °C"), ("bath", "23.04")]:
        harness.send(f"home/{room}/temperature", value)
    assert harness.value("temp_kitchen") == 21.5  # precision = 1
    assert harness.value("temp_living_room") == 19.0
    assert harness.value("temp_bath") == 23.0
    harness.send("home/attic/temperature", "10")  # a fourth room: over max_instances
    assert harness.state.get("temp_attic") is None
    assert harness.state.get("temp_kitchen") is not None
    assert {s.sensor for s in harness.seen} == {"temp_kitchen", "temp_living_room", "temp_bath"}


def test_tasmota_sensor_state_and_lwt(harness: Harness) -> None:
    harness.send(
        "tele/pool/SENSOR",
        '{"Time":"2026-05-01T12:00:00","DS18B20":{"Id":"3C01D607C1D5","Temperature":20.6},'
        '"TempUnit":"C"}',
    )
    pool = harness.state.get("pool")
    assert pool is not None
    assert (pool.value, pool.unit) == (20.6, "°C")  # unit taken from TempUnit
    harness.send(
        "tele/plug1/SENSOR",
        '{"Time":"2026-05-01T12:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00",'
        '"Total":12.3,"Yesterday":0.5,"Today":0.2,"Power":41,"Voltage":231,"Current":0.19}}',
    )
    assert harness.value("power_plug1") == 41.0
    # the pool payload has no ENERGY: that is a rejection for the catch-all power sensor
    assert harness.state.counters()["power_pool"].rejected == 1
    harness.send("tele/plug1/LWT", "Offline")
    assert harness.state.is_offline("power_plug1")
    snap = harness.state.get("power_plug1")
    assert snap is not None
    assert snap.offline
    assert not harness.state.is_offline("pool")
    harness.send("tele/plug1/LWT", "Online")
    assert not harness.state.is_offline("power_plug1")
    harness.send("tele/pool/LWT", "Offline")
    assert harness.state.is_offline("pool")


def test_zigbee2mqtt_fields_and_both_availability_forms(harness: Harness) -> None:
    harness.send(
        "zigbee2mqtt/bathroom",
        '{"battery":97,"humidity":61.2,"linkquality":134,"pressure":1012,'
        '"temperature":22.41,"voltage":3005}',
    )
    assert harness.value("bathroom_temp") == 22.41
    assert harness.value("bathroom_battery") == 97.0
    harness.send("zigbee2mqtt/bathroom/availability", '{"state":"offline"}')
    assert harness.state.is_offline("bathroom_temp")
    assert harness.state.is_offline("bathroom_battery")
    harness.send("zigbee2mqtt/bathroom/availability", "online")  # legacy plain text
    assert not harness.state.is_offline("bathroom_temp")
    harness.send("zigbee2mqtt/bathroom/availability", "offline")
    assert harness.state.is_offline("bathroom_battery")
    # a reading proves the device is back
    harness.send("zigbee2mqtt/bathroom", '{"battery":96,"temperature":22.5}')
    assert not harness.state.is_offline("bathroom_battery")


def test_scale_offset_precision_wildcards_and_arrays(harness: Harness) -> None:
    harness.send("tank/level/raw", "523")
    assert harness.value("tank") == 50.3
    harness.send("doors/front/contact", "ON")
    assert harness.value("door") is True
    harness.send("data/x/y", '{"a":[{"b":"7.5"}]}')
    assert harness.value("deep") == 7.5


@pytest.mark.parametrize(
    ("topic", "payload", "sensor", "reason"),
    [
        ("home/k/temperature", b"\xff\xfe\x00", "temp_k", "UTF-8"),
        ("home/k/temperature", b"warm", "temp_k", "not a number"),
        ("home/k/temperature", b"NaN", "temp_k", "not finite"),
        ("home/k/temperature", b"-inf", "temp_k", "not finite"),
        ("home/k/temperature", b"81", "temp_k", "outside the range"),
        ("home/k/temperature", b"1" * 40_000, "temp_k", "over 32768"),
        ("data/z", b"[1, 2]", "deep", "not an object"),
        ("data/z", b'{"a": []}', "deep", "missing"),
        ("data/z", b"[" * 10_000 + b"]" * 10_000, "deep", "JSON"),
        ("data/z", b'{"a": [{"b": NaN}]}', "deep", "NaN-or-invalid"),
        ("data/z", b'{"a": [{"b": ' + b"9" * 5000 + b"}]}", "deep", "JSON"),
        ("zigbee2mqtt/dev", b'{"battery": 100}', "dev_temp", "missing"),
    ],
)
def test_bad_input_is_counted_per_sensor(
    harness: Harness, topic: str, payload: bytes, sensor: str, reason: str
) -> None:
    harness.send(topic, payload)
    counters = harness.state.counters()[sensor]
    assert counters.rejected == 1
    reasons = ("not finite", "invalid JSON") if reason == "NaN-or-invalid" else (reason,)
    assert any(r in (counters.last_error or "") for r in reasons)
    assert harness.state.get(sensor) is None
    # ingest goes on: the next good payload is taken
    json_topic = topic.startswith(("data", "zigbee"))
    harness.send(topic, b'{"a":[{"b":1}],"temperature":20}' if json_topic else b"20")
    assert harness.state.get(sensor) is not None


def test_bad_input_is_logged_at_most_once_a_minute(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(50):
        harness.send("tank/level/raw", "garbage")
    warnings = [r for r in caplog.records if "tank" in r.getMessage()]
    assert len(warnings) == 1
    assert harness.state.counters()["tank"].rejected == 50


def test_oversized_camera_payload_and_unrouted(tmp_path: Path) -> None:
    h = Harness(tmp_path, "max_payload_bytes = 2048")
    h.send("cams/front", b"\xff\xd8\xff" + b"\0" * 5000)
    h.send("nobody/listens", b"1")
    assert (h.ingest.stats.oversized, h.ingest.stats.unrouted) == (1, 1)
    assert h.frames.rejected == 0
    assert h.frames.dropped == 0


class ThreadRecordingState(StateStore):
    """Records which thread stores frames."""

    frame_threads: list[str]

    def set_frame(self, frame: Frame) -> None:
        self.frame_threads = [*getattr(self, "frame_threads", []), threading.current_thread().name]
        super().set_frame(frame)


def test_frames_plain_and_base64_are_written_by_the_worker_only(tmp_path: Path) -> None:
    state = ThreadRecordingState()
    frames = FrameStore(tmp_path / "frames", state)
    ingest = MqttIngest(make_config(tmp_path), state, frames)
    jpeg, later = make_frame(AT), make_frame(AT.replace(second=1))
    ingest.handle("cams/front", jpeg, AT)
    ingest.handle("cams/front", base64.b64encode(later), AT.replace(second=1))
    ingest.handle("cams/front", b"\x89PNX not an image at all", AT)
    assert frames.rejected == 1
    # the handler only queued: nothing is on disk until the writer runs
    assert not (tmp_path / "frames").exists()
    frames.start()
    frames.stop()
    files = sorted((tmp_path / "frames" / "cam").iterdir())
    assert [f.read_bytes() for f in files] == [jpeg, later]
    assert set(state.frame_threads) == {"frame-writer"}


def test_event_hook_failure_does_not_stop_other_readings(tmp_path: Path) -> None:
    state = StateStore()
    calls: list[str] = []

    def hook(snap: SensorSnapshot) -> None:
        calls.append(snap.sensor)
        raise RuntimeError("rule bug")

    ingest = MqttIngest(make_config(tmp_path), state, FrameStore(tmp_path, state), hook)
    ingest.handle("zigbee2mqtt/d", b'{"temperature": 20, "battery": 50}', AT)
    assert calls == ["d_temp", "d_battery"]
    assert state.get("d_battery") is not None


_TOPICS = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(
            [
                "home",
                "temperature",
                "tele",
                "SENSOR",
                "LWT",
                "zigbee2mqtt",
                "availability",
                "data",
                "cams",
                "front",
                "tank",
                "level",
                "raw",
                "doors",
                "contact",
                "+",
                "#",
                "",
                "$SYS",
                "x" * 70,
                "{room}",
            ]
        ),
        min_size=1,
        max_size=5,
    ).map("/".join),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "a",
                    "b",
                    "0",
                    "temperature",
                    "battery",
                    "state",
                    "DS18B20",
                    "Temperature",
                    "ENERGY",
                    "Power",
                    "TempUnit",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=60).map(str.encode),
    _JSON.map(lambda doc: json.dumps(doc).encode()),
    st.sampled_from([b"\xff\xd8\xff\x00junk", b"\x89PNG\r\n\x1a\n", b"[" * 5000, b"Online"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(_TOPICS, _PAYLOADS), min_size=1, max_size=8))
def test_handler_never_raises(messages: list[tuple[str, bytes]]) -> None:
    state = StateStore(max_sensors=50)
    ingest = MqttIngest(_PROPERTY_CONFIG, state, FrameStore(Path("/nonexistent"), state))
    for topic, payload in messages:
        ingest.handle(topic, payload)  # must not raise, whatever arrives
    stats = ingest.stats
    assert stats.readings + stats.rejected >= 0
    for snap in state.sensors().values():
        assert isinstance(snap.value, float | bool | str)


_PROPERTY_CONFIG = make_config(Path("/nonexistent"))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"a": NaN}', None),  # the standard decoder accepts NaN; to_number refuses it later
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b'{"a": ' + b"9" * 5000 + b"}", "invalid JSON"),
        (b"\xff{}", "UTF-8"),
        (b'{"a": 1} trailing', "invalid JSON"),
    ],
)
def test_standard_json_fallback(payload: bytes, reason: str | None) -> None:
    """The decoder used when orjson is not installed fails only with DecodeError."""
    if reason is None:
        assert math.isnan(parse_json_std(payload)["a"])
        with pytest.raises(DecodeError, match="not finite"):
            from_document(parse_json_std(payload), "a")
        return
    with pytest.raises(DecodeError, match=reason):
        parse_json_std(payload)
