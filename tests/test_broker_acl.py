"""config/mosquitto-acl.example, loaded into a real mosquitto, does what it says."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker, BrokerUnavailable, start_broker

ROOT = Path(__file__).resolve().parent.parent
ACL = ROOT / "config" / "mosquitto-acl.example"
USERS = {"things-gateway": "gw-pass-1", "devices": "dev-pass-2", "homeassistant": "ha-pass-3"}
STATUS = "things-gateway/poolcam/status"
DISCOVERY = "homeassistant/binary_sensor/poolcam/online/config"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    folder = tmp_path_factory.mktemp("acl")
    passwd = folder / "passwd"
    passwd.touch()
    for user, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    try:
        broker = start_broker(
            prefer="mosquitto",
            extra_config=[
                "allow_anonymous false",
                f"password_file {passwd}",
                f"acl_file {ACL}",
                "use_username_as_clientid true",
            ],
        )
    except BrokerUnavailable as exc:
        pytest.skip(str(exc))
    yield broker
    broker.stop()


class Client:
    """A paho client that records what it receives and whether it was disconnected."""

    def __init__(self, broker: Broker, user: str | None, client_id: str = "") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.dropped = threading.Event()
        self.connected = threading.Event()
        self.refused: object = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if user is not None:
            self.client.username_pw_set(user, USERS[user])
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, r, p: self.dropped.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.connected.wait(5)

    def _on_connect(self, c: object, u: object, flags: object, reason: object, p: object) -> None:
        if getattr(reason, "is_failure", False):
            self.refused = reason
        else:
            self.connected.set()

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        time.sleep(0.3)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: Broker, topic: str) -> bytes | None:
    reader = Client(broker, "homeassistant", "reader")
    reader.subscribe(topic)
    time.sleep(0.3)
    reader.close()
    return next((p for t, p in reader.messages if t == topic), None)


def test_only_the_gateway_writes_its_status_and_discovery(secured: Broker) -> None:
    gateway = Client(secured, "things-gateway", "poolcam-gw")
    gateway.publish(STATUS, "online", retain=True)
    gateway.publish(DISCOVERY, '{"name": "online"}', retain=True)
    for user in ("devices", "homeassistant"):
        hostile = Client(secured, user)
        hostile.publish(STATUS, "offline", retain=True)  # dropped by the broker
        hostile.publish(DISCOVERY, "", retain=True)
        hostile.close()
    assert retained(secured, STATUS) == b"online"
    assert retained(secured, DISCOVERY) == b'{"name": "online"}'
    gateway.close()


def test_devices_reach_the_gateway_and_nobody_else_reads_as_it(secured: Broker) -> None:
    gateway = Client(secured, "things-gateway", "poolcam-gw")
    gateway.subscribe("home/#")
    device = Client(secured, "devices")
    device.publish("home/kitchen/temperature", "21.5")
    time.sleep(0.3)
    assert ("home/kitchen/temperature", b"21.5") in gateway.messages
    anonymous = Client(secured, None)
    assert not anonymous.connected.is_set()  # allow_anonymous false
    anonymous.close()
    device.close()
    gateway.close()


def test_the_gateways_client_id_cannot_be_taken_over(secured: Broker) -> None:
    gateway = Client(secured, "things-gateway", "poolcam-gw")
    gateway.subscribe("home/#")
    thief = Client(secured, "devices", client_id="poolcam-gw")  # the predictable id
    assert thief.connected.is_set()
    time.sleep(0.5)
    assert not gateway.dropped.is_set()  # its id is its user name, not the one it gave
    device = Client(secured, "devices", "sensor-1")
    device.publish("home/hall/temperature", "19")
    time.sleep(0.3)
    assert ("home/hall/temperature", b"19") in gateway.messages
    assert not [m for m in thief.messages if m[0] == "home/hall/temperature"]
    for client in (device, thief, gateway):
        client.close()
