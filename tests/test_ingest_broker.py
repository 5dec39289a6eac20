"""Ingest against a real mosquitto: formats, captures, sessions, reconnects, TLS, sharing."""

from __future__ import annotations

import base64
import logging
import subprocess
import threading
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devices.simulate import make_frame
from gateway.config import GatewayConfig
from gateway.demo.broker import Broker, TlsListener, find_free_port, find_mosquitto
from gateway.ingest.mqtt import MqttIngest, status_topic
from gateway.media.frames import FrameStore
from gateway.runtime.loading import validate_config
from gateway.state.store import SensorSnapshot, StateStore
from tests.gwutil import publish, start_gateway, wait_until
from tests.tlsutil import make_test_ca

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")


def make_config(
    port: int,
    tmp_path: Path,
    sensors: str,
    *,
    name: str = "gw",
    protocol: int = 5,
    persistent: bool = False,
    mqtt: str = "",
) -> GatewayConfig:
    text = f"""
[gateway]
name = "{name}"
state_dir = "{tmp_path}"

[mqtt]
host = "127.0.0.1"
port = {port}
protocol = {protocol}
persistent_session = {str(persistent).lower()}
reconnect_min = "100ms"
reconnect_max = "1s"
{mqtt}

{sensors}
"""
    return validate_config(tomllib.loads(text))


class Running:
    """A started MqttIngest with its state, frames and the readings its event hook saw."""

    def __init__(self, config: GatewayConfig, tmp_path: Path) -> None:
        self.state = StateStore()
        self.frames = FrameStore(tmp_path / "frames", self.state)
        self.seen: list[SensorSnapshot] = []
        self._lock = threading.Lock()
        self.ingest = MqttIngest(config, self.state, self.frames, self._hook)
        self.frames.start()
        self.ingest.start()

    def _hook(self, snap: SensorSnapshot) -> None:
        with self._lock:
            self.seen.append(snap)

    def values(self, sensor: str) -> list[Any]:
        with self._lock:
            return [s.value for s in self.seen if s.sensor == sensor]

    def wait_ready(self) -> None:
        assert self.ingest.ready.wait(20), "never connected and subscribed"

    def stop(self) -> None:
        self.ingest.stop()
        self.frames.stop()


@pytest.fixture
def run_ingest(tmp_path: Path) -> Iterator[Callable[[GatewayConfig], Running]]:
    started: list[Running] = []

    def start(config: GatewayConfig) -> Running:
        running = Running(config, tmp_path / f"gw{len(started)}")
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def test_tasmota_zigbee2mqtt_and_captures(
    broker: Broker, mqtt_topic: str, tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    p = mqtt_topic
    sensors = f"""
[[sensors]]
id = "temp_{{room}}"
topic = "{p}/sensors/{{room}}/temperature"

[[sensors]]
id = "{{device}}_temp"
topic = "{p}/tele/{{device}}/SENSOR"
format = "tasmota"
field = "DS18B20.Temperature"

[[sensors]]
id = "{{device}}_humidity"
topic = "{p}/zigbee2mqtt/{{device}}"
format = "zigbee2mqtt"
field = "humidity"
unit = "%"

[[sensors]]
id = "any_level"
topic = "{p}/misc/#"
format = "text"
"""
    gw = run_ingest(make_config(broker.port, tmp_path, sensors, protocol=5))
    gw.wait_ready()
    publish(
        broker,
        [
            (f"{p}/sensors/kitchen/temperature", "21.5 °C"),
            (f"{p}/sensors/hall/temperature", "18"),
            (
                f"{p}/tele/pool/SENSOR",
                '{"Time":"2026-05-01T12:00:00","DS18B20":{"Id":"3C01D607C1D5",'
                '"Temperature":20.6},"TempUnit":"C"}',
            ),
            (f"{p}/tele/pool/LWT", "Offline"),
            (
                f"{p}/zigbee2mqtt/bathroom",
                '{"battery":97,"humidity":61.2,"linkquality":134,"temperature":22.41}',
            ),
            (f"{p}/zigbee2mqtt/bathroom/availability", '{"state":"offline"}'),
            (f"{p}/misc/a/b/c", "hello"),
        ],
    )
    wait_until(lambda: gw.ingest.stats.availability == 2 and gw.state.get("any_level"))
    assert gw.state.get("temp_kitchen").value == 21.5  # type: ignore[union-attr]
    assert gw.state.get("temp_hall").value == 18.0  # type: ignore[union-attr]
    pool = gw.state.get("pool_temp")
    assert pool is not None
    assert (pool.value, pool.unit) == (20.6, "°C")
    assert gw.state.get("bathroom_humidity").value == 61.2  # type: ignore[union-attr]
    assert gw.state.is_offline("pool_temp")
    assert gw.state.is_offline("bathroom_humidity")
    assert gw.state.get("any_level").value == "hello"  # type: ignore[union-attr]


@pytest.mark.parametrize("protocol", [5, 311])
def test_persistent_session_gets_readings_sent_while_down(
    broker: Broker,
    mqtt_topic: str,
    tmp_path: Path,
    run_ingest: Callable[..., Running],
    protocol: int,
) -> None:
    sensors = f'[[sensors]]\nid = "level"\ntopic = "{mqtt_topic}/level"\n'
    name = f"persist{protocol}-{mqtt_topic.rsplit('/', 1)[1]}"
    config = make_config(
        broker.port, tmp_path, sensors, name=name, protocol=protocol, persistent=True
    )
    first = run_ingest(config)
    first.wait_ready()
    first.stop()  # the gateway goes away; its session stays at the broker
    sent = [float(i) for i in range(25)]
    publish(broker, [(f"{mqtt_topic}/level", str(v)) for v in sent])
    second = run_ingest(config)
    wait_until(lambda: len(second.values("level")) >= len(sent))
    assert second.values("level") == sent  # all of them, once each, in order


def test_reconnects_after_broker_restart_without_losing_qos1_readings(
    broker_factory: Callable[..., Broker], tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    port = find_free_port()
    persistence = tmp_path / "mosquitto"
    broker = broker_factory(prefer="mosquitto", port=port, persistence_dir=persistence)
    sensors = '[[sensors]]\nid = "flow"\ntopic = "plant/flow"\n'
    gw = run_ingest(make_config(port, tmp_path, sensors, name="restart", persistent=True))
    gw.wait_ready()
    publish(broker, [("plant/flow", str(i)) for i in range(10)])
    wait_until(lambda: len(gw.values("flow")) == 10)
    broker.stop()
    wait_until(lambda: not gw.ingest.connected.is_set())
    broker = broker_factory(prefer="mosquitto", port=port, persistence_dir=persistence)
    # published before the gateway is back: the restored session queues them
    publish(broker, [("plant/flow", str(i)) for i in range(10, 30)])
    wait_until(lambda: len(gw.values("flow")) >= 30)
    assert gw.values("flow") == [float(i) for i in range(30)]
    assert gw.ingest.stats.connects >= 2


def test_connects_when_the_broker_comes_up_later(
    broker_factory: Callable[..., Broker], tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    port = find_free_port()
    sensors = '[[sensors]]\nid = "x"\ntopic = "late/x"\n'
    gw = run_ingest(make_config(port, tmp_path, sensors, name="late"))
    assert not gw.ingest.connected.is_set()
    broker = broker_factory(prefer="mosquitto", port=port)
    gw.wait_ready()
    publish(broker, [("late/x", "7")])
    wait_until(lambda: gw.values("x") == [7.0])


def test_retained_and_base64_camera_frames(
    broker: Broker, mqtt_topic: str, tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    jpeg = make_frame(datetime.now(UTC))
    publish(broker, [(f"{mqtt_topic}/cam", jpeg)], retain=True)  # before the gateway exists
    cameras = f'[[cameras]]\nid = "cam"\ntopic = "{mqtt_topic}/cam"\n'
    gw = run_ingest(make_config(broker.port, tmp_path, cameras, name="cam"))
    # a retained frame of unknown age is not taken as a new frame
    wait_until(lambda: gw.frames.retained_ignored == 1)
    assert gw.state.latest_frame("cam") is None
    publish(broker, [(f"{mqtt_topic}/cam", base64.b64encode(jpeg))])
    first = wait_until(lambda: gw.state.latest_frame("cam"))
    assert first.path.read_bytes() == jpeg
    publish(broker, [(f"{mqtt_topic}/cam", jpeg)])  # the same bytes again: not a new frame
    wait_until(lambda: gw.frames.repeated == 1)
    assert gw.state.latest_frame("cam") == first
    assert gw.frames.stored == 1
    publish(broker, [(f"{mqtt_topic}/cam", b"")], retain=True)  # clear the retained frame


def test_tls_with_client_certificate_and_password(
    broker_factory: Callable[..., Broker],
    tmp_path: Path,
    run_ingest: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca = make_test_ca(tmp_path / "ca")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw", "s3cret-pw"], check=True)
    broker = broker_factory(
        prefer="mosquitto",
        tls=TlsListener(ca.server_cert, ca.server_key, ca.ca_cert, require_certificate=True),
        extra_config=[f"password_file {passwords}"],
    )
    assert broker.tls_port is not None
    tls = f"""username = "gw"
password = "s3cret-pw"

[mqtt.tls]
ca_file = "{ca.ca_cert}"
cert_file = "{ca.client_cert}"
key_file = "{ca.client_key}"
key_password = "{ca.client_key_password}"
"""
    sensors = '[[sensors]]\nid = "t"\ntopic = "secure/t"\n'
    caplog.set_level(logging.DEBUG)
    gw = run_ingest(make_config(broker.tls_port, tmp_path, sensors, name="tls", mqtt=tls))
    gw.wait_ready()
    publish(broker, [("secure/t", "12.5")])  # a local publisher on the plain listener
    wait_until(lambda: gw.values("t") == [12.5])
    logged = caplog.text
    assert "s3cret-pw" not in logged
    assert ca.client_key_password not in logged
    assert "(TLS)" in logged


def test_tls_refuses_an_untrusted_server(
    broker_factory: Callable[..., Broker], tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    good = make_test_ca(tmp_path / "good")
    other = make_test_ca(tmp_path / "other")
    broker = broker_factory(prefer="mosquitto", tls=TlsListener(good.server_cert, good.server_key))
    assert broker.tls_port is not None
    tls = f'[mqtt.tls]\nca_file = "{other.ca_cert}"\n'
    sensors = '[[sensors]]\nid = "t"\ntopic = "secure/t"\n'
    gw = run_ingest(make_config(broker.tls_port, tmp_path, sensors, name="untrusted", mqtt=tls))
    assert not gw.ingest.connected.wait(3)  # the handshake fails; paho keeps retrying
    assert gw.ingest.stats.connects == 0


def test_status_topic_online_then_last_will_offline(
    broker: Broker, mqtt_topic: str, tmp_path: Path, mqtt_subscribe: Callable[..., Any]
) -> None:
    name = f"lwt-{mqtt_topic.rsplit('/', 1)[1]}"
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(
        f"""
[gateway]
name = "{name}"
state_dir = "{tmp_path / "state"}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
persistent_session = false

[[sensors]]
id = "t"
topic = "{mqtt_topic}/t"

[[rules]]
id = "r"
every = "1h"
text = "{{{{ t }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""
    )
    topic = status_topic(validate_config(tomllib.loads(config_path.read_text())))
    sub = mqtt_subscribe(topic)
    proc = start_gateway(config_path)
    try:
        sub.wait_for(lambda msgs: any(m.payload == b"online" for m in msgs), timeout=20)
        assert [m.payload for m in sub.messages][-1] == b"online"
        proc.kill()  # no clean shutdown: the broker publishes the last will
        proc.wait(10)
        sub.wait_for(lambda msgs: msgs[-1].payload == b"offline", timeout=20)
        assert sub.messages[-1].payload == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    late = mqtt_subscribe(topic)  # retained: a newcomer sees the last word at once
    late.wait_for(lambda msgs: bool(msgs), timeout=10)
    assert late.messages[0].payload == b"offline"
    assert late.messages[0].retain


def test_overlapping_filters_deliver_each_message_once(
    broker: Broker, mqtt_topic: str, tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    p = mqtt_topic
    sensors = f"""
[[sensors]]
id = "bath_temp"
topic = "{p}/z2m/bath"
format = "zigbee2mqtt"
field = "temperature"

[[sensors]]
id = "{{device}}_battery"
topic = "{p}/z2m/{{device}}"
format = "zigbee2mqtt"
field = "battery"
"""
    gw = run_ingest(make_config(broker.port, tmp_path, sensors, name="overlap", protocol=5))
    gw.wait_ready()
    publish(broker, [(f"{p}/z2m/bath", '{"temperature": 21.0, "battery": 90}')] * 3)
    publish(broker, [(f"{p}/z2m/hall", '{"battery": 80}')])  # marks the end
    wait_until(lambda: gw.values("hall_battery"))
    assert gw.values("bath_temp") == [21.0] * 3
    assert gw.values("bath_battery") == [90.0] * 3
    assert gw.ingest.stats.messages == 4


def test_insecure_only_when_asked(
    broker_factory: Callable[..., Broker], tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    ca = make_test_ca(tmp_path / "ca", server_names="DNS:broker.other.example")
    broker = broker_factory(prefer="mosquitto", tls=TlsListener(ca.server_cert, ca.server_key))
    assert broker.tls_port is not None
    sensors = '[[sensors]]\nid = "t"\ntopic = "secure/t"\n'
    checked = f'[mqtt.tls]\nca_file = "{ca.ca_cert}"\n'
    strict = run_ingest(
        make_config(broker.tls_port, tmp_path, sensors, name="strict", mqtt=checked)
    )
    assert not strict.ingest.connected.wait(3)  # the certificate does not name 127.0.0.1
    lax = run_ingest(
        make_config(
            broker.tls_port, tmp_path, sensors, name="lax", mqtt=checked + "insecure = true\n"
        )
    )
    lax.wait_ready()
    publish(broker, [("secure/t", "3")])
    wait_until(lambda: lax.values("t") == [3.0])


def test_resubscribes_after_reconnect_without_a_persistent_session(
    broker_factory: Callable[..., Broker], tmp_path: Path, run_ingest: Callable[..., Running]
) -> None:
    port = find_free_port()
    broker = broker_factory(prefer="mosquitto", port=port)  # no persistence: forgets all
    sensors = '[[sensors]]\nid = "x"\ntopic = "again/x"\n'
    gw = run_ingest(make_config(port, tmp_path, sensors, name="again", persistent=False))
    gw.wait_ready()
    broker.stop()
    wait_until(lambda: not gw.ingest.connected.is_set())
    broker = broker_factory(prefer="mosquitto", port=port)
    gw.wait_ready()  # subscribed again on the new connection
    publish(broker, [("again/x", "5")])
    wait_until(lambda: gw.values("x") == [5.0])
    assert gw.ingest.stats.connects == 2


def test_retained_frames_are_not_stored_again_on_every_restart(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    # a camera agent publishes every frame retained; the gateway restarts three times
    topic = f"{mqtt_topic}/cam"
    old = make_frame(datetime(2026, 1, 1, tzinfo=UTC))
    publish(broker, [(topic, old)], retain=True)  # before the gateway exists: age unknown
    cameras = f'[[cameras]]\nid = "cam"\ntopic = "{topic}"\n'
    config = make_config(broker.port, tmp_path, cameras, name="retained")
    first = Running(config, tmp_path)
    try:
        first.wait_ready()
        live = make_frame(datetime.now(UTC))
        publish(broker, [(topic, live)], retain=True)
        # frames are handled in order: once the live one is in, the retained one was seen
        taken = wait_until(lambda: first.state.latest_frame("cam"))
    finally:
        first.stop()
    assert taken.path.read_bytes() == live
    folder = tmp_path / "frames" / "cam"
    assert [p.name for p in folder.iterdir()] == [taken.path.name]  # not the one of unknown age
    for _ in range(3):
        again = Running(config, tmp_path)
        try:
            again.wait_ready()
            restored = wait_until(lambda: again.state.latest_frame("cam"))  # noqa: B023
        finally:
            again.stop()
        assert restored.at == taken.at  # it keeps the time it was first received
        assert restored.path == taken.path
    assert [p.name for p in folder.iterdir()] == [taken.path.name]
    publish(broker, [(topic, b"")], retain=True)  # clear the retained frame
