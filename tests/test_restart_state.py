"""Issue 14.4: a restart (SIGTERM, SIGKILL) or reload forgets nothing the gateway knew.

The real daemon runs against the real mosquitto fixture: the first posts after a start
show the last values (captured sensors too, no ``n/a``) and windows equal to a brute
force over the published readings, and a ``when`` rule that fired does not fire again
for a condition that stayed true, while one that crossed while the daemon was down
fires once.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from tests.gwutil import archive_posts, base_config, publish, start_gateway, wait_until

PRESSURES = [1000.0, 1002.5, 1001.25, 1004.25]
STATUS = (
    "P{{ pressure }} K{{ temp_kitchen }} min{{ pressure.min_24h }}"
    " max{{ pressure.max_24h }} mean{{ pressure.mean_1h }} {{ temp_kitchen.stale }}"
)


def restart_config(broker: Broker, state: Path, topic: str, flush: str = "10m") -> str:
    return (
        base_config(broker, state)
        + f"""
[state]
history_flush_interval = "{flush}"

[[sensors]]
id = "pressure"
topic = "{topic}/pressure"
unit = "hPa"

[[sensors]]
id = "temp_{{room}}"
topic = "{topic}/{{room}}/temp"
unit = "°C"
expire_after = "1h"

[[rules]]
id = "status"
every = "1s"
text = '{STATUS}'
publish_to = ["archive"]

[[rules]]
id = "hot"
when = "temp_kitchen > 30"
clear_below = 25
text = "hot kitchen {{{{ temp_kitchen }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
path = "posts"
"""
    )


def brute_force() -> str:
    low, high = min(PRESSURES), max(PRESSURES)
    mean = sum(PRESSURES) / len(PRESSURES)
    assert mean == 1002.0  # renders "1002"
    return f"min{low:g} hPa max{high:g} hPa mean{mean:g} hPa"


def texts(state: Path, rule: str) -> list[str]:
    return [str(p["text"]) for p in archive_posts(state) if p["rule"] == rule]


def stop(gateway: subprocess.Popen[str], sig: signal.Signals) -> None:
    gateway.send_signal(sig)
    _, err = gateway.communicate(timeout=30)
    if sig == signal.SIGTERM:
        assert gateway.returncode == 0, err


def first_post_after(state: Path, seen: int) -> str:
    def newer() -> str | None:
        posts = texts(state, "status")
        return posts[seen] if len(posts) > seen else None

    return wait_until(newer, timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_keeps_values_windows_and_fired_rules(
    broker: Broker, mqtt_topic: str, tmp_path: Path, sig: signal.Signals
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    # with SIGKILL nothing is flushed at exit: what was written in time must come back
    flush = "10m" if sig == signal.SIGTERM else "1s"
    config.write_text(restart_config(broker, state, mqtt_topic, flush), encoding="utf-8")
    expected = f"P1004.25 hPa K31.25 °C {brute_force()} False"
    gateway = start_gateway(config)
    try:
        wait_until(lambda: texts(state, "status"), timeout=30)
        publish(broker, [(f"{mqtt_topic}/pressure", str(v)) for v in PRESSURES])
        publish(broker, [(f"{mqtt_topic}/kitchen/temp", "31.25")])
        wait_until(lambda: expected in texts(state, "status"), timeout=30)
        wait_until(lambda: texts(state, "hot") == ["hot kitchen 31.25 °C"], timeout=10)
        if sig == signal.SIGTERM:
            # a reload restores like a start
            seen = len(texts(state, "status"))
            gateway.send_signal(signal.SIGHUP)
            assert first_post_after(state, seen + 2) == expected
        else:
            # a power cut: state.json is saved within 10 s of a new sensor or a rule
            # firing; the history writer (every second here) writes finished minutes
            wait_until(lambda: _saved(state), timeout=30)
            wait_until(lambda: _history_rows(state) == len(PRESSURES), timeout=75)
    finally:
        stop(gateway, sig)
    seen = len(texts(state, "status"))

    gateway = start_gateway(config)
    try:
        first = first_post_after(state, seen)
        assert "n/a" not in first
        assert first == expected
        # the kitchen is still hot: the condition held across the restart, no new post
        publish(broker, [(f"{mqtt_topic}/kitchen/temp", "31.5")])
        wait_until(lambda: "K31.5 °C" in texts(state, "status")[-1], timeout=30)
        assert texts(state, "hot") == ["hot kitchen 31.25 °C"]
        publish(broker, [(f"{mqtt_topic}/kitchen/temp", "20")])  # cools down: re-armed
        wait_until(lambda: "K20 °C" in texts(state, "status")[-1], timeout=30)
    finally:
        stop(gateway, signal.SIGTERM)

    # it heats up while the daemon is down (a retained reading): one post, not two
    publish(broker, [(f"{mqtt_topic}/kitchen/temp", "33")], retain=True)
    try:
        for _ in range(2):
            seen = len(texts(state, "status"))
            gateway = start_gateway(config)
            try:
                wait_until(lambda: len(texts(state, "hot")) == 2, timeout=30)
                wait_until(lambda s=seen: len(texts(state, "status")) > s + 2, timeout=30)
            finally:
                stop(gateway, signal.SIGTERM)
        assert texts(state, "hot") == ["hot kitchen 31.25 °C", "hot kitchen 33 °C"]
    finally:
        publish(broker, [(f"{mqtt_topic}/kitchen/temp", b"")], retain=True)


def _saved(state: Path) -> bool:
    try:
        saved = json.loads((state / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    values = {k: v["value"] for k, v in saved["sensors"].items()}
    hot = saved.get("rules", {}).get("hot", {}).get("phase") == "fired"
    return hot and values == {"pressure": 1004.25, "temp_kitchen": 31.25}


def _history_rows(state: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{state / 'gateway.db'}?mode=ro", uri=True, timeout=10)
    try:
        (count,) = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM readings_minute WHERE sensor = 'pressure'"
        ).fetchone()
    except sqlite3.Error:
        return 0
    finally:
        conn.close()
    return int(count)
