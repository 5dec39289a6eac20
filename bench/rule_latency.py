"""Latency of a threshold rule: from the crossing reading to the committed post.

Starts a private mosquitto and an in-process gateway with one rule,
``when = "water_temp > 30"``.  Each round publishes a clearing reading (20) and then
the crossing one (31) at QoS 1, and measures from just before the crossing is
published to the moment the post and its delivery rows are committed to SQLite
(``synchronous=FULL``) — the runner wakes the delivery worker right after the commit.

Baseline, same broker, same run: the bare MQTT round trip (publish at QoS 1 →
a subscriber's ``on_message``), so the figure left for the gateway itself shows.

    python bench/rule_latency.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker, start_broker
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def client(broker: Broker, on_message: Callable[..., None] | None = None) -> mqtt.Client:
    """A connected paho client with its network loop running."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    if on_message is not None:
        c.on_message = on_message
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def mqtt_round_trip(broker: Broker, rounds: int) -> list[float]:
    """Publish → subscriber on_message, in milliseconds."""
    got = threading.Event()
    subscribed = threading.Event()
    sub = client(broker, lambda *_: got.set())
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.subscribe("bench/rtt", 1)
    subscribed.wait(5)
    pub = client(broker)
    samples = []
    for _ in range(rounds):
        got.clear()
        start = time.perf_counter()
        pub.publish("bench/rtt", "31", qos=1)
        if not got.wait(5):
            raise RuntimeError("round trip message lost")
        samples.append((time.perf_counter() - start) * 1000)
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
    return samples


def gateway_config(broker: Broker, state_dir: Path) -> Any:
    return validate_config(
        {
            "gateway": {"name": "bench", "state_dir": str(state_dir), "log_level": "warning"},
            "mqtt": {"host": broker.host, "port": broker.port, "persistent_session": False},
            "sensors": [{"id": "water_temp", "topic": "bench/temp", "unit": "°C"}],
            "rules": [
                {
                    "id": "hot",
                    "when": "water_temp > 30",
                    "text": "Hot: {{ water_temp }} at {{ now | time }}",
                    "publish_to": ["archive"],
                }
            ],
            "publishers": [{"id": "archive", "type": "file"}],
        }
    )


def rule_latency(broker: Broker, rounds: int) -> list[float]:
    """Crossing reading published → post committed, in milliseconds."""
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(gateway_config(broker, Path(tmp)))
        committed = threading.Event()
        original_wake = gateway.runner.wake

        def wake(publisher: str) -> None:
            committed.set()  # called right after the outbox commit
            original_wake(publisher)

        gateway.runner.wake = wake
        gateway.start()
        try:
            if not gateway.ingest.ready.wait(10):
                raise RuntimeError("gateway did not subscribe")
            pub = client(broker)
            samples = []
            for _ in range(rounds):
                pub.publish("bench/temp", "20", qos=1).wait_for_publish(5)
                committed.clear()
                start = time.perf_counter()
                pub.publish("bench/temp", "31", qos=1)
                if not committed.wait(10):
                    raise RuntimeError("no post for a crossing")
                samples.append((time.perf_counter() - start) * 1000)
            pub.disconnect()
            pub.loop_stop()
        finally:
            gateway.stop()
        return samples


def report(name: str, samples: list[float]) -> None:
    """Print p50/p99 of a list of milliseconds."""
    print(
        f"{name:<40} n={len(samples):<4} p50={percentile(samples, 50):7.2f} ms"
        f"  p99={percentile(samples, 99):7.2f} ms  max={max(samples):7.2f} ms"
        f"  mean={statistics.fmean(samples):7.2f} ms"
    )


def main() -> None:
    """Run both measurements against one private mosquitto and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with start_broker(prefer="mosquitto") as broker:
        print(f"broker: {broker.kind} on {broker.host}:{broker.port}, rounds: {args.rounds}")
        baseline = mqtt_round_trip(broker, args.rounds)
        latency = rule_latency(broker, args.rounds)
    report("baseline: MQTT publish -> on_message", baseline)
    report("rule: crossing reading -> committed post", latency)
    extra = percentile(latency, 50) - percentile(baseline, 50)
    print(f"gateway's own share at p50: {extra:.2f} ms (evaluate, compose, fit, SQLite commit)")


if __name__ == "__main__":
    main()
