"""devices.simulate and `things-device simulate`, against a real broker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image, ImageChops

from devices.cli import main
from devices.simulate import SensorModel, Simulator, make_frame
from gateway.demo.broker import Broker

SUFFIXES = ("pool/temperature", "weather/SENSOR", "river/level", "cam/pool")


def _has_all_topics(prefix: str) -> Callable[[list[Any]], bool]:
    wanted = {f"{prefix}/{suffix}" for suffix in SUFFIXES}
    return lambda messages: wanted <= {m.topic for m in messages}


def _check_number(payload: bytes) -> None:
    value = float(payload.decode())
    assert 15.0 < value < 35.0
    assert payload.decode() == f"{value:.2f}"


def _check_tasmota(payload: bytes) -> None:
    doc = json.loads(payload)
    assert set(doc) == {"Time", "AM2301", "TempUnit"}
    assert doc["TempUnit"] == "C"
    datetime.fromisoformat(doc["Time"])  # ISO-8601, seconds precision, like Tasmota
    assert len(doc["Time"]) == len("2026-11-22T10:00:00")
    assert set(doc["AM2301"]) == {"Temperature", "Humidity"}
    assert -20.0 < doc["AM2301"]["Temperature"] < 45.0
    assert 0.0 <= doc["AM2301"]["Humidity"] <= 100.0


def _check_river(payload: bytes) -> None:
    doc = json.loads(payload)
    assert set(doc) == {"level_cm", "battery"}
    assert isinstance(doc["level_cm"], float)
    assert 50.0 <= doc["level_cm"] <= 400.0
    assert isinstance(doc["battery"], int)
    assert 0 <= doc["battery"] <= 100


def _decode_jpeg(payload: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(payload))
    assert image.format == "JPEG"
    assert image.size == (640, 480)
    image.load()
    return image


@pytest.fixture
def simulator(broker: Broker, mqtt_topic: str) -> Iterator[Simulator]:
    sim = Simulator(
        broker.host, broker.port, prefix=mqtt_topic, interval=0.2, camera_interval=0.3, seed=7
    )
    yield sim
    sim.stop()


def test_simulator_publishes_documented_topics_and_shapes(
    simulator: Simulator, mqtt_subscribe: Callable[..., Any], mqtt_topic: str
) -> None:
    sub = mqtt_subscribe(f"{mqtt_topic}/#")
    simulator.start()
    frames_needed = _has_all_topics(mqtt_topic)
    messages = sub.wait_for(
        lambda ms: frames_needed(ms) and sum(m.topic.endswith("/cam/pool") for m in ms) >= 2
    )
    simulator.stop()
    got = sub.by_topic()
    assert set(got) == {f"{mqtt_topic}/{suffix}" for suffix in SUFFIXES}
    for payload in got[f"{mqtt_topic}/pool/temperature"]:
        _check_number(payload)
    for payload in got[f"{mqtt_topic}/weather/SENSOR"]:
        _check_tasmota(payload)
    for payload in got[f"{mqtt_topic}/river/level"]:
        _check_river(payload)
    frames = [_decode_jpeg(p) for p in got[f"{mqtt_topic}/cam/pool"]]
    assert ImageChops.difference(frames[0], frames[-1]).getbbox() is not None
    assert simulator.published >= len(messages)


def test_camera_frame_is_retained(
    broker: Broker, mqtt_subscribe: Callable[..., Any], mqtt_topic: str
) -> None:
    sim = Simulator(broker.host, broker.port, prefix=mqtt_topic, interval=5, camera_interval=5)
    try:
        sim.start()
        first = mqtt_subscribe(f"{mqtt_topic}/cam/pool")
        first.wait_for(lambda ms: len(ms) >= 1)
    finally:
        sim.stop()
    # A subscriber arriving after the simulator stopped still gets the last frame.
    late = mqtt_subscribe(f"{mqtt_topic}/cam/pool")
    (msg,) = late.wait_for(lambda ms: len(ms) >= 1)
    assert msg.retain
    _decode_jpeg(msg.payload)


def test_simulator_speaks_mqtt5(
    broker: Broker, mqtt_subscribe: Callable[..., Any], mqtt_topic: str
) -> None:
    if broker.kind != "mosquitto":
        pytest.skip("amqtt speaks MQTT 3.1.1 only")
    sub = mqtt_subscribe(f"{mqtt_topic}/#", protocol=5)
    sim = Simulator(broker.host, broker.port, prefix=mqtt_topic, interval=0.2, protocol=5, qos=2)
    try:
        sim.start()
        messages = sub.wait_for(_has_all_topics(mqtt_topic))
    finally:
        sim.stop()
    assert _has_all_topics(mqtt_topic)(messages)


def test_simulator_reconnects_after_broker_restart(
    broker_factory: Callable[..., Broker], mqtt_subscribe: Callable[..., Any], mqtt_topic: str
) -> None:
    first = broker_factory()
    sim = Simulator(first.host, first.port, prefix=mqtt_topic, interval=0.1, camera_interval=60)
    try:
        sim.start()
        before = mqtt_subscribe(f"{mqtt_topic}/pool/temperature", broker=first)
        before.wait_for(lambda ms: len(ms) >= 1)
        first.stop()
        second = broker_factory(port=first.port)
        after = mqtt_subscribe(f"{mqtt_topic}/pool/temperature", broker=second)
        # paho's first reconnect attempt comes after reconnect_delay_set's min_delay (1 s).
        messages = after.wait_for(lambda ms: len(ms) >= 2, timeout=10)
    finally:
        sim.stop()
    assert len(messages) >= 2


def test_stop_is_idempotent_and_safe_before_start(broker: Broker) -> None:
    sim = Simulator(broker.host, broker.port)
    sim.stop()
    sim.stop()
    assert sim.published == 0


def test_run_returns_after_duration(broker: Broker, mqtt_topic: str) -> None:
    sim = Simulator(broker.host, broker.port, prefix=mqtt_topic, interval=0.1)
    sim.run(duration=0.5)
    assert sim.published >= 4  # 3 readings + 1 frame at start, more readings later


def test_frames_at_different_times_differ() -> None:
    at = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    one, two = make_frame(at), make_frame(at + timedelta(seconds=7))
    assert one != two
    a, b = Image.open(io.BytesIO(one)), Image.open(io.BytesIO(two))
    assert a.format == b.format == "JPEG"
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    # Not just the timestamp: the swimmer moved (a difference well below the text band).
    assert diff.crop((0, 200, 640, 480)).getbbox() is not None


def test_make_frame_size_and_determinism() -> None:
    at = datetime(2026, 6, 1, 12, 30, 15)
    frame = make_frame(at, width=320, height=240)
    assert Image.open(io.BytesIO(frame)).size == (320, 240)
    assert make_frame(at, width=320, height=240) == frame


def test_sensor_model_is_repeatable_and_plausible_all_day() -> None:
    start = datetime(2026, 11, 22, 0, 0, 0)
    a, b = SensorModel(seed=3), SensorModel(seed=3)
    assert a.messages("x", start) == b.messages("x", start)
    assert SensorModel(seed=4).messages("x", start) != a.messages("x", start)
    temps = []
    for minute in range(0, 24 * 60, 10):
        topics = dict(a.messages("demo", start + timedelta(minutes=minute)))
        assert set(topics) == {"demo/pool/temperature", "demo/weather/SENSOR", "demo/river/level"}
        _check_number(topics["demo/pool/temperature"])
        _check_tasmota(topics["demo/weather/SENSOR"])
        _check_river(topics["demo/river/level"])
        temps.append(float(topics["demo/pool/temperature"]))
    assert max(temps) - min(temps) > 2.0  # the daily cycle shows
    assert max(temps) < 27.0
    assert min(temps) > 23.0


def test_cli_simulate_in_subprocess(
    broker: Broker, mqtt_subscribe: Callable[..., Any], mqtt_topic: str
) -> None:
    sub = mqtt_subscribe(f"{mqtt_topic}/#")
    argv = [
        sys.executable, "-m", "devices", "simulate",
        "--host", broker.host, "--port", str(broker.port), "--prefix", mqtt_topic,
        "--interval", "0.2", "--camera-interval", "0.5", "--duration", "2", "--seed", "1",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "published" in result.stderr
    messages = sub.wait_for(_has_all_topics(mqtt_topic))
    assert _has_all_topics(mqtt_topic)(messages)
    assert len(messages) >= 3 * 5


@pytest.mark.parametrize(
    "args",
    [["simulate", "--interval", "0"], ["simulate", "--qos", "3"], ["simulate", "--protocol", "4"]],
)
def test_cli_rejects_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_requires_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "simulate" in capsys.readouterr().err
