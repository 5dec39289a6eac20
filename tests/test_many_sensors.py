"""10,000 declared sensors: subscribed through the topic trie, every reading arrives,
and a broker restart resubscribes them all (the pairwise filter check took 69 s here)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker, find_free_port
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.gwutil import base_config, wait_until

SENSORS = 10_000


def _topic(i: int) -> str:
    return f"many/r{i // 100}/s{i}"


def _all(state: StateStore, value: float) -> bool:
    return all((s := state.get(f"s{i}")) and s.value == value for i in range(SENSORS))


def _config(broker: Broker, tmp_path: Path) -> str:
    lines = [base_config(broker, tmp_path), f"[state]\nmax_sensors = {SENSORS + 1}\n"]
    lines += [f'[[sensors]]\nid = "s{i}"\ntopic = "{_topic(i)}"\n' for i in range(SENSORS)]
    # a wildcard over one room: its 100 exact topics are covered, not subscribed twice
    lines.append('[[sensors]]\nid = "{name}_any"\ntopic = "many/r7/{name}"\n')
    return "\n".join(lines)


def _publish_all(broker: Broker, value: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(_topic(i), value, qos=1) for i in range(SENSORS)]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def test_ten_thousand_sensors_all_arrive_and_resubscribe(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    port = find_free_port()
    broker = broker_factory(prefer="mosquitto", port=port)
    config = validate_config(tomllib.loads(_config(broker, tmp_path)))
    state = StateStore(max_sensors=SENSORS + 200)
    frames = FrameStore(tmp_path / "frames", state)
    ingest = MqttIngest(config, state, frames)
    subscriptions = ingest.routes.subscriptions()
    assert len(subscriptions) == SENSORS - 100 + 1
    assert "many/r7/+" in subscriptions
    assert "many/r7/s700" not in subscriptions
    ingest.start()
    try:
        assert ingest.ready.wait(30), "never subscribed"
        _publish_all(broker, "1")
        wait_until(lambda: _all(state, 1.0))
        any_ = state.get("s700_any")
        assert any_ is not None
        assert any_.value == 1.0

        broker.stop()
        wait_until(lambda: not ingest.connected.is_set())
        broker = broker_factory(prefer="mosquitto", port=port)  # no session: resubscribe
        assert ingest.ready.wait(60), "never resubscribed"
        _publish_all(broker, "2")
        wait_until(lambda: _all(state, 2.0))
        assert state.refused == 0
    finally:
        ingest.stop()
