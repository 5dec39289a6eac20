"""Helpers for tests that run the gateway as a real subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
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


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """``folder`` with a tmpfs mounted on it (``options``: e.g. ``ro,size=1m``).

    Skips the test where this machine cannot mount one (not root, no mount rights).
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file would raise ENOSPC again when closed.
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError:
            pass
    with contextlib.suppress(OSError), open(folder / "filler2", "wb") as fh:  # the last blocks
        while True:
            fh.write(b"\0" * 512)
            fh.flush()
    return filler


class StderrLines:
    """Collects a subprocess's stderr as it is written, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self._lines.append(line)

    def has(self, fragment: str) -> bool:
        with self._lock:
            return any(fragment in line for line in self._lines)

    def count(self, fragment: str) -> int:
        with self._lock:
            return sum(fragment in line for line in self._lines)

    def text(self) -> str:
        self._thread.join(timeout=10)
        with self._lock:
            return "".join(self._lines)
