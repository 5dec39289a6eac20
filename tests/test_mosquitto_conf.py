"""config/mosquitto.conf, started in a real mosquitto: accepted, and a gateway's
persistent session away during a flood gets every QoS 1 reading back; with
mosquitto's default queue limit the same flood loses readings in the broker."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.demo.broker import find_free_port, find_mosquitto

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "config" / "mosquitto.conf"
FLOOD = 5_000


def _local_copy(tmp_path: Path, port: int, extra: str = "") -> Path:
    """The shipped file with only its listener and store folder moved into the test's."""
    text = CONF.read_text()
    text = re.sub(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {tmp_path}/", text)
    if os.geteuid() == 0:
        text += "\nuser root\n"  # else mosquitto drops to a user that cannot write tmp_path
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + "allow_anonymous true\n" + extra)  # users are the ACL test's job
    return conf


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    exe = find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto is not installed")
    started: list[subprocess.Popen[bytes]] = []

    def run(extra: str = "") -> int:
        port = find_free_port()
        conf = _local_copy(tmp_path, port, extra)
        proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.PIPE)
        started.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            probe = mqtt.Client(CallbackAPIVersion.VERSION2)
            try:
                probe.connect("127.0.0.1", port)
                probe.disconnect()
                return port
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start with config/mosquitto.conf")

    yield run
    for proc in started:
        proc.terminate()
        proc.wait(10)


def _session(port: int, received: list[bytes], done: threading.Event) -> mqtt.Client:
    """A gateway-like MQTT 5 client with a persistent session on ``flood/#`` at QoS 1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-session", protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.payload)
        if len(received) >= FLOOD:
            done.set()

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    return client


def _flood_while_away(port: int) -> int:
    received: list[bytes] = []
    done = threading.Event()
    gateway = _session(port, received, done)
    subscribed = threading.Event()
    gateway.on_subscribe = lambda *_a: subscribed.set()
    gateway.loop_start()
    gateway.subscribe("flood/#", qos=1)
    assert subscribed.wait(10)
    gateway.disconnect()
    gateway.loop_stop()

    sender = mqtt.Client(CallbackAPIVersion.VERSION2)
    sender.connect("127.0.0.1", port)
    sender.loop_start()
    infos = [sender.publish(f"flood/s{i % 100}", str(i), qos=1) for i in range(FLOOD)]
    for info in infos:
        info.wait_for_publish(30)
    sender.disconnect()
    sender.loop_stop()

    back = _session(port, received, done)
    back.loop_start()
    deadline, seen = time.monotonic() + 30, -1
    while not done.wait(1.0) and len(received) != seen and time.monotonic() < deadline:
        seen = len(received)  # stop once a second passes with nothing new
    time.sleep(0.5)
    back.disconnect()
    back.loop_stop()
    return len(set(received))


def test_the_recommended_config_keeps_a_flood_for_an_away_gateway(start) -> None:  # type: ignore[no-untyped-def]
    port = start()
    assert _flood_while_away(port) == FLOOD


def test_mosquittos_default_queue_limit_loses_the_same_flood(start) -> None:  # type: ignore[no-untyped-def]
    port = start("max_queued_messages 1000\nmax_queued_bytes 0\n")  # the later line wins
    assert _flood_while_away(port) < FLOOD
