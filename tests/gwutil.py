"""Helpers for tests that run the gateway as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker

T = TypeVar("T")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
        cwd=cwd,
    )


def start_gateway(config: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``things-gateway run -c CONFIG`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or os.environ.copy(),
    )


def wait_until(check: Callable[[], T | None], timeout: float = 20, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def publish(
    broker: Broker, messages: Sequence[tuple[str, bytes | str]], *, retain: bool = False
) -> None:
    """Publish messages at QoS 1 and wait until the broker has them all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def archive_posts(state_dir: Path, folder: str = "posts") -> list[dict[str, Any]]:
    """Every record in a file publisher's posts.jsonl."""
    path = state_dir / folder / "posts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def base_config(broker: Broker, state_dir: Path, *, name: str = "testgw") -> str:
    """The [gateway] and [mqtt] tables of a test config."""
    return f"""
[gateway]
name = "{name}"
timezone = "Europe/London"
state_dir = "{state_dir}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
protocol = {5 if broker.kind == "mosquitto" else 311}
persistent_session = false
"""


def event_rules(topic: str, *, sensor: bool = False, events: str = "events") -> str:
    """A sensor ``temp`` on ``<topic>/temp`` (with ``sensor``), an ``on_message`` rule
    ``ev`` on ``<topic>/<events>`` posting "Event <n>" to the file publisher ``archive``
    (``<state_dir>/posts``)."""
    temp = f'\n[[sensors]]\nid = "temp"\ntopic = "{topic}/temp"\n' if sensor else ""
    return (
        temp
        + f"""
[[rules]]
id = "ev"
on_message = {{ topic = "{topic}/{events}" }}
text = "Event {{{{ event.n }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
path = "posts"
"""
    )
