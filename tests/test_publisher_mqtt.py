"""The mqtt publisher against the real mosquitto: JSON post, image messages, retain, QoS."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError
from gateway.demo.broker import Broker
from gateway.model import Post, Receipt, RetryableError, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.base import BrokerSettings, Publisher, PublisherContext
from gateway.publishers.mqtt import MqttConfig, MqttPublisher
from gateway.runtime.loading import validate_config
from tests.fakes.media import jpeg


def build(broker: Broker, tmp_path: Path, **options: Any) -> MqttPublisher:
    config = MqttConfig.model_validate({"id": "bus", "type": "mqtt", "timeout": 3, **options})
    settings = BrokerSettings(host=broker.host, port=broker.port, protocol=311)
    return build_publisher(config, PublisherContext(tmp_path, "pool", broker=settings))


def a_post(tmp_path: Path, n_images: int = 2) -> Post:
    media = tuple(jpeg(tmp_path, f"m{n}.jpg", (64 + n, 48), f"View {n}") for n in range(n_images))
    return Post(new_post_id(), "hourly", datetime.now(UTC), "Water 24 °C", media, "en")


def test_post_json_and_images_on_their_topics(
    broker: Broker, mqtt_topic: str, mqtt_subscribe: Any, tmp_path: Path
) -> None:
    sub = mqtt_subscribe(f"{mqtt_topic}/#")
    publisher = build(broker, tmp_path, topic=mqtt_topic + "/{gateway}/{rule}/post")
    assert not publisher._connected.is_set()  # building does not connect
    post = a_post(tmp_path)
    receipt = publisher.publish(post, "Water 24 °C 🐟", post.media, "key-1")
    publisher.close()
    topic = f"{mqtt_topic}/pool/hourly/post"
    messages = sub.wait_for(lambda m: len(m) >= 3)
    assert [m.topic for m in messages] == [f"{topic}/image/0", f"{topic}/image/1", topic]
    for msg, item in zip(messages, post.media, strict=False):
        assert msg.payload == item.path.read_bytes()
        assert msg.qos == 1
        assert not msg.retain
    body = json.loads(messages[2].payload)
    assert body["id"] == post.id
    assert body["text"] == "Water 24 °C 🐟"
    assert body["idempotency_key"] == "key-1"
    assert body["gateway"] == "pool"
    assert [m["topic"] for m in body["media"]] == [f"{topic}/image/0", f"{topic}/image/1"]
    assert [m["alt"] for m in body["media"]] == ["View 0", "View 1"]
    assert receipt == Receipt(post.id, f"mqtt://{broker.host}:{broker.port}/{topic}")
    assert isinstance(publisher, Publisher)


def test_retained_without_images(
    broker: Broker, mqtt_topic: str, mqtt_subscribe: Any, tmp_path: Path
) -> None:
    publisher = build(
        broker, tmp_path, topic=mqtt_topic + "/{rule}", retain=True, images="omit", qos=0
    )
    post = a_post(tmp_path, 1)
    publisher.publish(post, "kept", post.media, "key-2")
    publisher.close()
    # A late subscriber still gets the post: it was retained.
    sub = mqtt_subscribe(f"{mqtt_topic}/#")
    (msg,) = sub.wait_for(lambda m: len(m) >= 1)
    assert msg.topic == f"{mqtt_topic}/hourly"
    assert msg.retain
    body = json.loads(msg.payload)
    assert body["text"] == "kept"
    assert "topic" not in body["media"][0]
    assert body["media"][0]["alt"] == "View 0"


def test_unreachable_broker_is_retryable(tmp_path: Path) -> None:
    config = MqttConfig.model_validate(
        {"id": "bus", "type": "mqtt", "host": "127.0.0.1", "port": 9, "timeout": 0.5}
    )
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
    post = a_post(tmp_path, 0)
    with pytest.raises(RetryableError, match=r"not connected to 127\.0\.0\.1:9"):
        publisher.publish(post, "nobody listens", (), "key-3")
    publisher.close()


def test_defaults_to_the_gateway_broker_and_validates_topics(tmp_path: Path) -> None:
    config = validate_config(
        {
            "gateway": {"name": "gw", "state_dir": str(tmp_path)},
            "mqtt": {"host": "broker.lan", "port": 1884, "username": "u", "password": "pw"},
            "publishers": [{"id": "bus", "type": "mqtt"}],
        }
    )
    from gateway.runtime.app import broker_settings

    (pub_config,) = config.publishers
    assert isinstance(pub_config, MqttConfig)
    settings = pub_config.broker(broker_settings(config))
    assert (settings.host, settings.port, settings.username) == ("broker.lan", 1884, "u")
    assert settings.password == "pw"
    assert "pw" not in repr(settings)
    for bad in ("a/+/b", "a/#", "{nope}/x"):
        with pytest.raises(ConfigError, match="topic"):
            validate_config({"publishers": [{"id": "bus", "type": "mqtt", "topic": bad}]})


def test_worker_retries_while_the_broker_is_down_and_sends_once(
    broker_factory: Any, mqtt_topic: str, tmp_path: Path
) -> None:
    from gateway.demo.broker import find_free_port
    from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
    from gateway.outbox.store import Outbox
    from tests.conftest import Subscription

    port = find_free_port()
    config = MqttConfig.model_validate(
        {"id": "bus", "type": "mqtt", "timeout": 1, "topic": mqtt_topic + "/{rule}"}
    )
    settings = BrokerSettings(host="127.0.0.1", port=port, protocol=311)
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool", broker=settings))
    outbox = Outbox(tmp_path / "gateway.db")
    post = a_post(tmp_path, 0)
    outbox.add(post, {"bus": "while the broker was down"})
    worker = DeliveryWorker(outbox, publisher, RetryPolicy(base_delay=0, jitter=0))
    worker.step()  # nobody listens on the port yet
    (failed,) = outbox.open_deliveries()
    assert failed["status"] == "failed"
    assert "not connected" in failed["last_error"]

    broker = broker_factory(prefer="mosquitto", port=port)
    sub = Subscription(broker, f"{mqtt_topic}/#")
    try:
        for _ in range(60):  # paho reconnects by itself; each step waits up to `timeout`
            if outbox.next_delivery("bus") is None:
                break
            worker.step()
        messages = sub.wait_for(lambda m: len(m) >= 1)
    finally:
        sub.close()
        publisher.close()
    assert [json.loads(m.payload)["id"] for m in messages] == [post.id]
    (entry,) = outbox.history(1)
    assert entry["deliveries"]["bus"]["status"] == "sent"
    outbox.close()
