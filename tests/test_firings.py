"""Event firings are queued durably (gateway/rules/firings.py): none is dropped.

- a burst of 10,000 queued QoS 1 events, delivered at once after a restart, is fired
  in order, each exactly once, with a bounded window in memory (real mosquitto,
  real ingest, real SQLite queue);
- the issue's observation as a user meets it: 25 events queued while the gateway was
  down make 25 posts (before: "busy, dropped a firing", 9 posts);
- a queued event at start waits for the retained camera frame, so its post has the image;
- a redelivered event (DUP) already recorded is not fired twice.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.compose.composer import MessageEvent
from gateway.config import GatewayConfig
from gateway.demo.broker import Broker, find_mosquitto
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.rules.firings import WINDOW, FiringQueue, RuleDispatch
from gateway.rules.triggers import MessageRules, decode_event
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.gwutil import (
    archive_posts,
    event_rules,
    fill,
    publish,
    start_gateway,
    tmpfs,
    wait_until,
)
from tests.mediautil import scene_jpeg
from tests.test_durability import StderrLines

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")
BURST = 10_000


def persistent(broker: Broker, state: Path, name: str = "firegw") -> str:
    return f"""
[gateway]
name = "{name}"
timezone = "Europe/London"
state_dir = "{state}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
protocol = {5 if broker.kind == "mosquitto" else 311}
persistent_session = true
client_id = "{name}-{state.parent.name}"
"""


def publish_many(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1, pipelined (many in flight), returning once the broker has every one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class EventRig:
    """Real ingest, firing queue and dispatch wired as the gateway wires them."""

    ingest: MqttIngest
    dispatch: RuleDispatch
    queue: FiringQueue
    state: StateStore

    @classmethod
    def build(cls, config: GatewayConfig, folder: Path, fire: Any) -> EventRig:
        queue = FiringQueue(folder / "gateway.db")
        dispatch = RuleDispatch(fire, queue)
        state = StateStore()
        rules = MessageRules(config.rules, state, lambda: datetime.now(UTC), dispatch.submit)
        ingest = MqttIngest(
            config,
            state,
            FrameStore(folder / "frames", state),
            extra_topics=rules.topics,
            on_extra=rules.on_message,
            on_batch_end=dispatch.commit,
            seen_event=lambda topic, payload: dispatch.seen(topic, decode_event(payload)),
            state_dir=folder,
        )
        dispatch.deferred = ingest.in_network_thread
        return cls(ingest, dispatch, queue, state)

    def start(self) -> None:
        """Workers and gate first, then the connection."""
        self.dispatch.start()
        self.dispatch.open_gate()
        self.ingest.start()

    def stop(self) -> None:
        self.ingest.stop(timeout=0.5)
        self.dispatch.stop()
        self.queue.close()


@needs_mosquitto
def test_a_burst_of_10000_queued_events_fires_in_order_exactly_once(
    broker_factory: Any, mqtt_topic: str, tmp_path: Path
) -> None:
    broker = broker_factory(prefer="mosquitto", extra_config=["max_queued_messages 0"])
    text = persistent(broker, tmp_path) + event_rules(mqtt_topic)
    config = validate_config(tomllib.loads(text))
    fired: list[int] = []
    held: list[int] = []
    lock = threading.Lock()

    def fire(rule: str, event: MessageEvent | None, readings: object, *, firing: int) -> None:
        assert event is not None
        with lock:
            fired.append(int(event.data["n"]))
            held.append(rig.dispatch.held)

    # A first connection makes the session and its subscription; then the gateway is away.
    rig = EventRig.build(config, tmp_path, fire)
    rig.ingest.start()
    assert rig.ingest.ready.wait(10)
    rig.stop()
    publish_many(
        broker, [(f"{mqtt_topic}/events", json.dumps({"n": n}).encode()) for n in range(BURST)]
    )
    # Back: the broker delivers all 10,000 at once.
    rig = EventRig.build(config, tmp_path, fire)
    rig.start()
    try:
        wait_until(lambda: len(fired) >= BURST, timeout=240, interval=0.5)
        time.sleep(0.5)  # anything extra would show now
    finally:
        rig.stop()
    assert fired == list(range(BURST))  # in order, each exactly once
    assert max(held) <= WINDOW  # bounded memory, whatever the backlog
    assert rig.dispatch.refused == 0
    assert rig.ingest.stats.messages == BURST


def test_the_queue_survives_a_restart_and_recognises_a_redelivery(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    queue = FiringQueue(db)
    queue.add("ev", MessageEvent("cam/events", {"n": 1}), None)
    queue.add("ev", MessageEvent("cam/events", {"n": 2}), None)
    assert queue.commit() == 2
    queue.close()  # the process stops before firing them

    fired: list[Any] = []
    queue = FiringQueue(db)
    assert queue.seen("cam/events", {"n": 1})
    assert not queue.seen("cam/events", {"n": 3})
    dispatch = RuleDispatch(lambda r, e, _x, *, firing: fired.append(e.data["n"]), queue)
    dispatch.start()
    dispatch.open_gate()
    assert dispatch.drain(10)
    dispatch.stop()
    assert fired == [1, 2]
    assert queue.open_count() == 0
    queue.close()


def test_firings_held_on_a_full_disk_post_once_it_frees_and_a_stop_says_what_it_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk (a real tmpfs): firings are held in memory, written by the first
    commit after space returns; a stop while it is still full logs how many are lost."""
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        queue = FiringQueue(disk / "gateway.db")
        filler = fill(disk)
        queue.add("ev", MessageEvent("cam/events", {"n": 1}), None)
        with pytest.raises(sqlite3.Error):
            queue.commit()
        filler.unlink()
        (disk / "filler2").unlink(missing_ok=True)
        assert queue.commit() == 1  # held, then written once space returned
        filler = fill(disk)
        queue.add("ev", MessageEvent("cam/events", {"n": 2}), None)
        queue.add("ev", MessageEvent("cam/events", {"n": 3}), None)
        with caplog.at_level("ERROR", logger="gateway.rules.firings"):
            queue.close()
        assert "2 event firings held in memory could not be written at stop" in caplog.text


def event_config(broker: Broker, state: Path, topic: str, extra: str = "") -> str:
    return persistent(broker, state) + extra + event_rules(topic)


def run_once(config: Path) -> None:
    """Start the gateway until it has subscribed (a persistent session now exists), stop it."""
    gateway = start_gateway(config)
    log = StderrLines(gateway)
    try:
        wait_until(lambda: log.has("connected to MQTT broker"), timeout=30)
        time.sleep(1)  # its SUBSCRIBE is done
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
    assert gateway.returncode == 0, log.text()


@needs_mosquitto
def test_events_queued_while_down_all_post_after_a_restart(
    broker_factory: Any, mqtt_topic: str, tmp_path: Path
) -> None:
    broker = broker_factory(prefer="mosquitto")
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(event_config(broker, state, mqtt_topic), encoding="utf-8")
    run_once(config)
    publish(broker, [(f"{mqtt_topic}/events", json.dumps({"n": n})) for n in range(25)])
    gateway = start_gateway(config)
    try:
        wait_until(lambda: len(archive_posts(state)) >= 25, timeout=60)
        time.sleep(1)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    texts = [r["text"] for r in archive_posts(state)]
    assert texts == [f"Event {n}" for n in range(25)]
    assert "dropped a firing" not in err


@needs_mosquitto
def test_a_queued_event_at_start_gets_the_retained_camera_frame(
    broker_factory: Any, mqtt_topic: str, tmp_path: Path
) -> None:
    broker = broker_factory(prefer="mosquitto")
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    camera = f"""
[[cameras]]
id = "cam_a"
topic = "{mqtt_topic}/cam"
"""
    text = event_config(broker, state, mqtt_topic, camera).replace(
        'publish_to = ["archive"]',
        'publish_to = ["archive"]\nimages = [{ camera = "cam_a", alt = "cam" }]',
    )
    config.write_text(text, encoding="utf-8")
    gateway = start_gateway(config)
    try:
        frames = state / "media" / "frames" / "cam_a"

        def stored() -> bool:
            publish(broker, [(f"{mqtt_topic}/cam", scene_jpeg())], retain=True)
            return frames.exists() and any(frames.iterdir())

        wait_until(stored, timeout=30, interval=1)
        time.sleep(1)
    finally:
        gateway.send_signal(signal.SIGKILL)  # a power cut: state.json not saved since
        gateway.wait(timeout=30)
    # While the gateway is away: an event is queued (the frame stays retained).
    publish(broker, [(f"{mqtt_topic}/events", json.dumps({"n": 1}))])
    gateway = start_gateway(config)
    try:
        wait_until(lambda: archive_posts(state), timeout=30)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    [record] = archive_posts(state)
    assert record["text"] == "Event 1"
    assert record["media"], err  # the retained frame was taken before the rule fired
    assert "no frame received yet" not in err


def test_a_redelivered_event_already_recorded_is_not_fired_twice(tmp_path: Path) -> None:
    """A broker played by the test sends an event, gets its PUBACK, then sends it again
    with DUP set (as after a PUBACK lost on the way): one firing, both acknowledged."""
    from tests.test_fastclient import puback, publish_packet, read_packet

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    text = f"""
[gateway]
name = "dupgw"
timezone = "UTC"
state_dir = "{tmp_path}"

[mqtt]
host = "127.0.0.1"
port = {port}
protocol = 311
persistent_session = false
"""
    config = validate_config(tomllib.loads(text + event_rules("cam")))
    fired: list[Any] = []
    rig = EventRig.build(config, tmp_path, lambda r, e, _x, *, firing: fired.append(e.data["n"]))
    rig.start()
    server, _ = listener.accept()
    server.settimeout(10)
    try:
        assert read_packet(server)[0] == 0x10  # CONNECT
        server.sendall(b"\x20\x02\x00\x00")

        def next_of(kind: int) -> bytes:
            while True:
                packet = read_packet(server)
                if packet[0] & 0xF0 == kind:
                    return packet

        subscribe = next_of(0x80)  # one topic filter: the rule's
        body = subscribe[2:] if subscribe[1] < 128 else subscribe[3:]
        mid = body[:2]
        server.sendall(b"\x90\x03" + mid + b"\x01")
        event = publish_packet(b"cam/events", b'{"n": 7}', qos=1, mid=5)
        server.sendall(event)
        assert next_of(0x40) == puback(5)
        wait_until(lambda: fired == [7], timeout=10)
        again = bytearray(event)
        again[0] |= 0x08  # DUP: the broker sends it again
        server.sendall(bytes(again))
        assert next_of(0x40) == puback(5)
        time.sleep(0.5)
    finally:
        rig.stop()
        server.close()
        listener.close()
    assert fired == [7]
    assert rig.ingest.stats.duplicates == 1
