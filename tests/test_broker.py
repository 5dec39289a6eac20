"""gateway.demo.broker: real mosquitto and amqtt brokers, checked with a paho client."""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.demo.broker import (
    Broker,
    BrokerKind,
    BrokerStartError,
    BrokerUnavailable,
    find_free_port,
    find_mosquitto,
    start_broker,
)

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

BrokerFactory = Callable[..., Broker]


def _amqtt_installed() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


needs_amqtt = pytest.mark.skipif(not _amqtt_installed(), reason="amqtt not installed")


def _round_trip(
    broker: Broker,
    topic: str,
    payload: bytes,
    protocol: MQTTProtocolVersion = mqtt.MQTTv311,
) -> bytes:
    """Subscribe, publish at QoS 1 from the same client, and return what comes back."""
    received: list[bytes] = []
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, 1)
    client.on_subscribe = lambda c, *_: c.publish(topic, payload, qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        got.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert got.wait(5), f"no message back from {broker}"
    finally:
        client.disconnect()
        client.loop_stop()
    return received[0]


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def _refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@needs_mosquitto
@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_mosquitto_round_trip(
    broker_factory: BrokerFactory, mqtt_topic: str, protocol: MQTTProtocolVersion
) -> None:
    broker = broker_factory(prefer="mosquitto")
    assert broker.kind == "mosquitto"
    assert broker.host == "127.0.0.1"
    payload = b"\x00\xffbinary" + uuid.uuid4().bytes
    assert _round_trip(broker, mqtt_topic, payload, protocol) == payload


@needs_amqtt
def test_amqtt_round_trip(broker_factory: BrokerFactory, mqtt_topic: str) -> None:
    broker = broker_factory(prefer="amqtt")
    assert broker.kind == "amqtt"
    payload = b"\x00\xffbinary" + uuid.uuid4().bytes
    assert _round_trip(broker, mqtt_topic, payload) == payload


@needs_mosquitto
def test_auto_prefers_mosquitto(broker_factory: BrokerFactory) -> None:
    assert broker_factory(prefer="auto").kind == "mosquitto"


BOTH_KINDS = [
    pytest.param("mosquitto", marks=needs_mosquitto),
    pytest.param("amqtt", marks=needs_amqtt),
]


@pytest.mark.parametrize("kind", BOTH_KINDS)
def test_stop_is_idempotent_and_frees_port(kind: BrokerKind, mqtt_topic: str) -> None:
    port = find_free_port()
    with start_broker(prefer=kind, port=port) as broker:
        assert broker.port == port
        assert broker.running
        assert not _refuses_connections(broker.host, port)
        broker.stop()
        assert not broker.running
        assert _refuses_connections(broker.host, port)
        broker.stop()  # second stop is a no-op, and so is __exit__
    # The port is really free: a new broker can listen on it straight away.
    with start_broker(prefer=kind, port=port) as again:
        assert _round_trip(again, mqtt_topic, b"again") == b"again"


@pytest.mark.parametrize("kind", BOTH_KINDS)
def test_port_in_use_is_a_start_error_with_the_reason(kind: BrokerKind) -> None:
    # The squatter accepts TCP connections but never answers MQTT: start_broker must
    # not mistake it for the broker it started.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerStartError, match=r"(?i)address already in use"):
            start_broker(prefer=kind, port=port)


def test_unavailable_names_both_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.demo.broker.find_mosquitto", lambda: None)
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # makes the import fail
    with pytest.raises(BrokerUnavailable, match="apt install mosquitto") as info:
        start_broker()
    assert "things-gateway[demo]" in str(info.value)
    with pytest.raises(BrokerUnavailable, match="mosquitto not found"):
        start_broker(prefer="mosquitto")


def _persistent_client(client_id: str, received: list[bytes], present: list[bool]) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.on_connect = lambda _c, _u, flags, _rc, _p: present.append(flags.session_present)
    client.on_message = lambda _c, _u, msg: received.append(bytes(msg.payload))
    return client


@needs_mosquitto
def test_mosquitto_persistence_survives_restart(
    broker_factory: BrokerFactory, tmp_path: Path, mqtt_topic: str
) -> None:
    store = tmp_path / "mosquitto-data"
    first = broker_factory(prefer="mosquitto", persistence_dir=store)
    client_id = f"persist-{uuid.uuid4().hex[:8]}"
    received: list[bytes] = []
    present: list[bool] = []

    subscriber = _persistent_client(client_id, received, present)
    subscriber.connect(first.host, first.port)
    subscriber.loop_start()
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe(mqtt_topic, 1)
    assert subscribed.wait(5)
    subscriber.disconnect()
    subscriber.loop_stop()

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
    publisher.connect(first.host, first.port)
    publisher.loop_start()
    for i in range(3):
        publisher.publish(mqtt_topic, f"queued-{i}".encode(), qos=1).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()

    first.stop()
    second = broker_factory(prefer="mosquitto", port=first.port, persistence_dir=store)
    assert any(store.iterdir()), "mosquitto wrote no persistence file"

    # Reconnect without subscribing again: the session and its queue come from disk.
    subscriber = _persistent_client(client_id, received, present)
    subscriber.connect(second.host, second.port)
    subscriber.loop_start()
    try:
        _wait_until(lambda: len(received) >= 3)
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    assert present == [False, True]
    assert received == [b"queued-0", b"queued-1", b"queued-2"]
