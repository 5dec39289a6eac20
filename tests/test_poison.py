"""Poison messages under the unit's memory limit (MemoryMax=256M): no crash loop.

Each poison input is published retained and at QoS 1 while the gateway is away (a
persistent session), then the gateway is restarted three times inside a 256 MB memory
cgroup (v1).  Each time it must stay up, count the input (never buffer it) and post
the next valid reading.  A QoS 1 copy is acknowledged once counted, so only the
retained copy comes back at later starts (the broker sends retained messages on every
subscription, by MQTT's design).  Skips, saying why, where no memory cgroup can be made.

The last test makes a message really kill the gateway (an operator raised
``max_payload_bytes`` to 200 MB; 150 MB then cost more than 256 MB) and checks that
it is not fatal twice: the next start discards it while reading it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker, find_mosquitto
from tests.gwutil import archive_posts, publish, wait_until
from tests.test_durability import StderrLines

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
LIMIT = 256 * 1024 * 1024
MB = 1024 * 1024

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto"),
]


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A cgroup v1 memory group limited to 256 MB (skips when one cannot be made here)."""
    if not (CGROUP_ROOT / "memory.limit_in_bytes").exists():
        pytest.skip("no cgroup v1 memory controller at /sys/fs/cgroup/memory")
    group = CGROUP_ROOT / f"things-gateway-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(LIMIT))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup: {exc}")
    try:
        yield group
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def start_limited(config: Path, group: Path) -> subprocess.Popen[str]:
    """``things-gateway run`` inside the memory cgroup."""
    script = f'echo $$ > "{group}/cgroup.procs" && exec "$@"'
    return subprocess.Popen(
        ["sh", "-c", script, "sh", sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def poison_config(broker: Broker, state: Path, topic: str, protocol: int, extra: str = "") -> str:
    return f"""
[gateway]
name = "poisongw"
timezone = "UTC"
state_dir = "{state}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
protocol = {protocol}
persistent_session = true
client_id = "poisongw-{protocol}"
{extra}

[[sensors]]
id = "temp"
topic = "{topic}/temp"

[[sensors]]
id = "hum"
topic = "{topic}/hum"

[[rules]]
id = "ev"
on_message = {{ topic = "{topic}/events/#" }}
text = "Event {{{{ event.n }}}} at {{{{ temp }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
path = "posts"
"""


def publish_big(broker: Broker, topic: str, payload: bytes) -> None:
    """One retained QoS 1 message (large ones included)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()


def totals(log: str) -> dict[str, int]:
    match = re.search(
        r"ingest totals: (\d+) messages, (\d+) readings, (\d+) rejected, (\d+) oversized,"
        r" (\d+) duplicates, (\d+) poisoned",
        log,
    )
    assert match, log[-2000:]
    keys = ("messages", "readings", "rejected", "oversized", "duplicates", "poisoned")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def one_run(config: Path, group: Path, state: Path, broker: Broker, topic: str, n: int) -> str:
    """Start, wait for the valid post ``n``, check the gateway is still up, stop cleanly."""
    gateway = start_limited(config, group)
    log = StderrLines(gateway)
    try:
        wait_until(lambda: log.has("connected to MQTT broker"), timeout=60)

        def posted() -> bool:
            publish(broker, [(f"{topic}/temp", f"2{n}.5"), (f"{topic}/events/ok", f'{{"n": {n}}}')])
            return any(r["text"].startswith(f"Event {n} ") for r in archive_posts(state))

        wait_until(posted, timeout=60, interval=1)
        time.sleep(2)  # any late trouble with the poison would show now
        assert gateway.poll() is None, log.text()
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    text = log.text()
    assert gateway.returncode == 0, text[-3000:]
    return text


@pytest.mark.parametrize("protocol", [311, 5])
def test_poison_inputs_are_counted_and_never_take_the_gateway_down(
    broker_factory: Any, memory_cgroup: Path, mqtt_topic: str, tmp_path: Path, protocol: int
) -> None:
    broker = broker_factory(prefer="mosquitto")
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(poison_config(broker, state, mqtt_topic, protocol), encoding="utf-8")
    one_run(config, memory_cgroup, state, broker, mqtt_topic, 0)  # makes the session
    poisons: list[tuple[str, bytes]] = [
        (f"{mqtt_topic}/events/nested", b"[" * 100_000),  # absurdly nested JSON
        (f"{mqtt_topic}/hum", b"\xff\xfe not utf-8"),
        (f"{mqtt_topic}/events/big", b'{"n": "' + b"x" * (50 * MB) + b'"}'),  # 50 MB event
        (f"{mqtt_topic}/temp", b"1" * (120 * MB)),  # 120 MB reading
    ]
    for topic, payload in poisons:
        publish_big(broker, topic, payload)
    runs = [totals(one_run(config, memory_cgroup, state, broker, mqtt_topic, n)) for n in (1, 2, 3)]
    if protocol == 5:
        # MQTT 5: the CONNECT's Maximum Packet Size makes the broker drop the big ones.
        assert [r["oversized"] for r in runs] == [0, 0, 0]
    else:
        # 3.1.1: discarded while read and counted: the queued QoS 1 copies once (then
        # acknowledged for good), the retained copies at every start.
        assert [r["oversized"] for r in runs] == [4, 2, 2]
    # Rejected for their sensor: the bad reading, and (3.1.1) the 120 MB one.
    expected = [2, 1, 1] if protocol == 5 else [4, 2, 2]
    assert [r["rejected"] for r in runs] == expected


def test_a_message_that_killed_the_gateway_is_not_fatal_twice(
    broker_factory: Any, memory_cgroup: Path, mqtt_topic: str, tmp_path: Path
) -> None:
    broker = broker_factory(prefer="mosquitto")
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    # The operator raised the limits: a 150 MB reading now costs more than 256 MB.
    limits = f"max_payload_bytes = {200 * MB}\nmax_sensor_payload_bytes = {200 * MB}"
    config.write_text(
        poison_config(broker, state, mqtt_topic, 311, limits),
        encoding="utf-8",
    )
    one_run(config, memory_cgroup, state, broker, mqtt_topic, 0)
    publish_big(broker, f"{mqtt_topic}/temp", b"1" * (150 * MB))
    gateway = start_limited(config, memory_cgroup)
    log = StderrLines(gateway)
    gateway.wait(timeout=120)  # the OOM killer stops it while it buffers the message
    assert gateway.returncode == -signal.SIGKILL, log.text()[-2000:]
    assert (state / "ingest-inflight").exists()
    texts = [one_run(config, memory_cgroup, state, broker, mqtt_topic, n) for n in (1, 2, 3)]
    assert "the previous run stopped while handling a" in texts[0]
    poisoned = [totals(t)["poisoned"] for t in texts]
    # First start: the copies the killed run never acknowledged, and the retained copy
    # of the new subscription; every copy is then acknowledged, so later starts see
    # only the retained copy (sent on every subscription, by MQTT's design).
    assert poisoned[0] >= 2
    assert poisoned[1:] == [1, 1]
    assert not (state / "ingest-inflight").exists()
