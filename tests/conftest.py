"""Shared pytest fixtures: real MQTT brokers and per-test topics.

Tests talk to a real broker (mosquitto when installed, else amqtt, MQTT 3.1.1 only).
Every test gets its own topic prefix from ``mqtt_topic``, so tests sharing the
session broker never see each other's messages.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker, BrokerUnavailable, start_broker


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A mosquitto on a free loopback port for the whole session (amqtt if mosquitto is absent)."""
    try:
        handle = start_broker(prefer="mosquitto")
    except BrokerUnavailable:
        try:
            handle = start_broker(prefer="amqtt")
        except BrokerUnavailable as exc:
            pytest.skip(str(exc))
    with handle:
        yield handle


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., Broker]]:
    """Start fresh brokers with ``start_broker(**kwargs)``; all are stopped at teardown.

    Use it for tests that stop or restart a broker, e.g.
    ``broker_factory(prefer="mosquitto", port=port, persistence_dir=tmp_path)``.
    """
    started: list[Broker] = []

    def factory(**kwargs: Any) -> Broker:
        handle = start_broker(**kwargs)
        started.append(handle)
        return handle

    yield factory
    for handle in reversed(started):
        handle.stop()


@pytest.fixture
def mqtt_topic(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test: ``t/<test name>/<8 hex>`` (no wildcards)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return f"t/{name}/{uuid.uuid4().hex[:8]}"


class Subscription:
    """A paho client subscribed to one topic filter, collecting messages for assertions."""

    def __init__(
        self, broker: Broker, topic_filter: str, *, qos: int = 1, protocol: int = 311
    ) -> None:
        """Connect and subscribe; returns once the broker has acknowledged the subscription."""
        self.messages: list[mqtt.MQTTMessage] = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        version = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=version)
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic_filter, qos)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(5):
            self.close()
            raise TimeoutError(f"no SUBACK for {topic_filter} from {broker}")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(msg)
            self._changed.notify_all()

    def wait_for(
        self, done: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 5.0
    ) -> list[mqtt.MQTTMessage]:
        """Wait until ``done(messages)`` is true; return a copy of the messages either way."""
        with self._changed:
            self._changed.wait_for(lambda: done(self.messages), timeout)
            return list(self.messages)

    def by_topic(self) -> dict[str, list[bytes]]:
        """Payloads received so far, grouped by topic, in arrival order."""
        with self._changed:
            grouped: dict[str, list[bytes]] = {}
            for msg in self.messages:
                grouped.setdefault(msg.topic, []).append(bytes(msg.payload))
            return grouped

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_subscribe(broker: Broker) -> Iterator[Callable[..., Subscription]]:
    """Subscribe to a topic filter: ``mqtt_subscribe(filter, broker=..., qos=1, protocol=311)``.

    Returns a :class:`Subscription` (``messages``, ``wait_for(pred)``, ``by_topic()``);
    the session ``broker`` is used unless another is given. All are closed at teardown.
    """
    subscriptions: list[Subscription] = []

    def subscribe(topic_filter: str, *, broker: Broker = broker, **kwargs: Any) -> Subscription:
        subscription = Subscription(broker, topic_filter, **kwargs)
        subscriptions.append(subscription)
        return subscription

    yield subscribe
    for subscription in subscriptions:
        subscription.close()


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Secrets registered for masking by one test (the registry is per process) stay there."""
    import gateway.config.secrets

    saved = gateway.config.secrets._secrets
    yield
    gateway.config.secrets._secrets = saved
