"""Ingest against a second broker besides mosquitto: aedes (npm) and amqtt (PyPI).

Both speak MQTT 3.1.1 only and answer an MQTT 5 CONNECT with "unsupported protocol
version": the gateway's default (``protocol = 5``) falls back to 3.1.1 by itself and
says so once.  aedes is found in ``.ci/node/node_modules`` (``.ci/run`` installs it
with npm) or ``THINGS_GATEWAY_AEDES_DIR``; a broker that cannot be had skips its
tests with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.compose.composer import MessageEvent
from gateway.demo.broker import (
    Broker,
    BrokerUnavailable,
    _wait_until_listening,
    find_free_port,
    start_broker,
)
from gateway.runtime.loading import validate_config
from tests.gwutil import event_rules, publish, wait_until
from tests.test_firings import EventRig

ROOT = Path(__file__).resolve().parent.parent
AEDES_SCRIPT = Path(__file__).resolve().parent / "brokers" / "aedes_broker.js"


def aedes_modules() -> Path | None:
    """The node_modules folder holding aedes, if any."""
    for folder in (os.environ.get("THINGS_GATEWAY_AEDES_DIR"), str(ROOT / ".ci" / "node")):
        if folder and (Path(folder) / "node_modules" / "aedes").is_dir():
            return Path(folder) / "node_modules"
    return None


def start_aedes() -> Broker:
    node = shutil.which("node")
    modules = aedes_modules()
    if node is None:
        raise BrokerUnavailable("node is not installed")
    if modules is None:
        raise BrokerUnavailable(
            "aedes is not installed: npm install --prefix .ci/node aedes@0.51 (.ci/run does)"
        )
    port = find_free_port()
    env = {**os.environ, "NODE_PATH": str(modules)}
    process = subprocess.Popen(
        [node, str(AEDES_SCRIPT), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if not _wait_until_listening("127.0.0.1", port, lambda: process.poll() is None):
        process.kill()
        _out, err = process.communicate()
        raise BrokerUnavailable(f"aedes did not start: {err.decode(errors='replace')[-300:]}")

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return Broker("127.0.0.1", port, "amqtt", stop)  # kind: "3.1.1 only", as amqtt


@pytest.fixture(params=["aedes", "amqtt"])
def second_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A running MQTT 3.1.1-only broker that is not mosquitto (skips if unavailable)."""
    try:
        handle = start_aedes() if request.param == "aedes" else start_broker(prefer="amqtt")
    except BrokerUnavailable as exc:
        pytest.skip(f"{request.param}: {exc}")
    with handle:
        yield handle


def config_text(broker: Broker, tmp_path: Path, topic: str, protocol: int = 5) -> str:
    return f"""
[gateway]
name = "second"
timezone = "UTC"
state_dir = "{tmp_path}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
protocol = {protocol}
persistent_session = false
""" + event_rules(topic, sensor=True)


def test_mqtt5_default_falls_back_to_311_and_ingests(
    second_broker: Broker, tmp_path: Path, mqtt_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = validate_config(tomllib.loads(config_text(second_broker, tmp_path, mqtt_topic)))
    assert config.mqtt.protocol == 5
    fired: list[Any] = []
    lock = threading.Lock()

    def fire(rule: str, event: MessageEvent | None, _r: object, *, firing: int) -> None:
        assert event is not None
        with lock:
            fired.append(event.data["n"])

    rig = EventRig.build(config, tmp_path, fire)
    ingest = rig.ingest
    caplog.set_level(logging.INFO, logger="gateway.ingest.mqtt")
    rig.start()
    try:
        assert ingest.ready.wait(40), "never subscribed: no fallback to MQTT 3.1.1"
        messages = [(f"{mqtt_topic}/temp", f"{20 + n / 10:.1f}") for n in range(50)]
        messages += [(f"{mqtt_topic}/events", json.dumps({"n": n})) for n in range(20)]
        publish(second_broker, messages)
        wait_until(lambda: len(fired) >= 20 and ingest.stats.readings >= 50, timeout=20)
    finally:
        rig.stop()
    snap = rig.state.get("temp")
    assert snap is not None
    assert snap.value == pytest.approx(24.9)
    assert fired == list(range(20))
    fallbacks = [r for r in caplog.records if "does not speak MQTT 5" in r.getMessage()]
    assert len(fallbacks) == 1, [r.getMessage() for r in caplog.records]
    assert ingest.stats.connects == 1
