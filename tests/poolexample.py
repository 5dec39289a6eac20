"""The pool example (config/examples/pool.toml) as the conversation tests run it: on
a test broker, in a temporary state folder, with a camera agent that answers
``<topic>/capture`` with a new frame, as ``things-device camera`` does."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

from gateway.demo.broker import Broker

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "pool.toml"
BLUE = (0, 0, 255)


def solid_jpeg(color: tuple[int, int, int]) -> bytes:
    """A 320x240 JPEG of one colour (a frame whose origin a test can tell)."""
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pool_config(
    tmp_path: Path, broker: Broker, name: str, replacements: dict[str, str] | None = None
) -> Path:
    """The example with its name, state folder, broker and topics (``site/`` becomes
    ``<name>/``) made the test's, no quiet hours (a test may run at night), and
    ``replacements`` applied; returns the written config's path."""
    text = (
        EXAMPLE.read_text(encoding="utf-8")
        .replace('name = "poolcam"', f'name = "{name}"')
        .replace('state_dir = "var/pool"', f'state_dir = "{tmp_path / "state"}"')
        .replace('host = "localhost"', f'host = "{broker.host}"')
        .replace("port = 1883", f"port = {broker.port}")
        .replace('quiet_hours = "22:00-07:00"', "")
        .replace("site/", f"{name}/")
    )
    for old, new in (replacements or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "pool.toml"
    config.write_text(text, encoding="utf-8")
    return config


@contextlib.contextmanager
def camera_agent(broker: Broker, topic: str) -> Iterator[list[int]]:
    """Answers each message on ``<topic>/capture`` with a blue frame on ``topic``;
    yields the list of requests it answered."""
    answered: list[int] = []

    def on_message(client: mqtt.Client, _userdata: object, _msg: mqtt.MQTTMessage) -> None:
        answered.append(1)
        client.publish(topic, solid_jpeg(BLUE), qos=1)

    subscribed = threading.Event()
    agent = mqtt.Client(CallbackAPIVersion.VERSION2)
    agent.on_message = on_message
    agent.on_subscribe = lambda *_: subscribed.set()
    agent.connect(broker.host, broker.port)
    agent.loop_start()
    agent.subscribe(f"{topic}/capture", 1)
    if not subscribed.wait(5):
        raise TimeoutError(f"no SUBACK for {topic}/capture")
    try:
        yield answered
    finally:
        agent.loop_stop()
        agent.disconnect()
