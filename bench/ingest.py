"""Ingest benchmark: the gateway's message path against a bare paho subscriber.

Usage::

    python bench/ingest.py [--sensors 1000] [--messages 100000] [--publishers 4]

It starts a private mosquitto and, for QoS 0 and QoS 1, measures two consumers
the same way:

1. the consumer connects with a persistent session, subscribes, and leaves;
2. several publisher *processes* flood the broker with Tasmota-style JSON readings
   for ``--sensors`` sensors (mosquitto queues them for the absent consumer);
3. the consumer comes back in a fresh process and drains the queue as fast as it
   can; the rate is messages / (last message - first message).

So the subscriber, not the publishers, is the bottleneck.  Consumer (a) is a bare
paho client that only counts; consumer (b) is :class:`gateway.ingest.mqtt.MqttIngest`
(route lookup, JSON decode, range/transform, state update with rolling windows and
per-minute buckets, and an event-rule check hook).  The target compares (b) with (a).

(b) reads through :class:`gateway.ingest.fastclient.IngestClient`, which is faster than
paho's own inbound path, so (b)/(a) alone would hide what the handler costs.  Consumer
(c) is that client counting and nothing else: (b)/(c) is the share of the client's
ceiling that the gateway keeps after decoding and updating state.

Each consumer runs in its own process, whose peak RSS (VmHWM) is reported, plus its
RSS before connecting; the gateway's modules are byte-compiled first, as an installed
package's are.  The gateway's consumer then goes on to the worst point of its
steady state: every sensor's rolling windows in use, and a whole history-flush interval
(10 minutes) of finished per-minute rows waiting in memory for the SQLite writer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

BROKER_CONFIG = [
    "max_queued_messages 0",  # queue everything for the absent consumer
    "max_inflight_messages 0",
    "queue_qos0_messages true",  # ... QoS 0 too
]
TOPIC = "bench/{sensor}/SENSOR"


def vm_kb(field: str) -> int:
    """A ``Vm*`` line of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def payload(sensor: int, n: int) -> bytes:
    """A Tasmota SENSOR message."""
    temp = 15.0 + (sensor % 100) / 10 + (n % 50) / 100
    return json.dumps(
        {
            "Time": "2026-05-01T12:00:00",
            "SI7021": {"Temperature": round(temp, 2), "Humidity": 40 + n % 20},
            "TempUnit": "C",
        },
        separators=(",", ":"),
    ).encode()


# -- publishers ------------------------------------------------------------------------------


def publish_share(port: int, qos: int, sensors: int, start: int, stop: int) -> None:
    """Publish messages ``start..stop`` (round-robin over sensors) and wait until sent."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [
        client.publish(TOPIC.format(sensor=f"s{n % sensors}"), payload(n % sensors, n), qos=qos)
        for n in range(start, stop)
    ]
    for info in infos[-1000:] if qos == 0 else infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def flood(port: int, qos: int, sensors: int, messages: int, publishers: int) -> float:
    import multiprocessing  # here, not at the top: consumers' RSS is the gateway's alone

    """Publish ``messages`` from several processes; returns the seconds it took."""
    began = time.perf_counter()
    step = -(-messages // publishers)
    procs = [
        multiprocessing.Process(
            target=publish_share,
            args=(port, qos, sensors, i * step, min(messages, (i + 1) * step)),
        )
        for i in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return time.perf_counter() - began


# -- consumers (each in its own process) -----------------------------------------------------


class Clock:
    """First and last message times, and an event when ``total`` messages were seen."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.first = self.last = 0.0
        self.first_cpu = self.last_cpu = 0.0
        self.done = threading.Event()

    def tick(self) -> None:
        """Count one message."""
        self.count += 1
        if self.count == 1:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        if self.count == self.total:
            self.last, self.last_cpu = time.perf_counter(), time.process_time()
            self.done.set()


def counting_consumer(
    port: int, qos: int, client_id: str, clock: Clock | None, *, fast: bool = False
) -> mqtt.Client:
    """A subscriber that counts and does nothing else: bare paho (a), or with ``fast``
    the gateway's :class:`IngestClient` (c)."""
    args = (CallbackAPIVersion.VERSION2,)
    client: mqtt.Client
    if fast:  # imported only here, so (a) loads nothing of the gateway
        from gateway.ingest.fastclient import IngestClient

        fast_client = IngestClient(*args, client_id=client_id, protocol=mqtt.MQTTv5)
        if clock is not None:
            fast_client.on_fast_message = lambda *_: clock.tick()
        client = fast_client
    else:
        client = mqtt.Client(*args, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe("bench/#", qos)
    if clock is not None:
        client.on_message = lambda *_: clock.tick()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    return client


def gateway_consumer(port: int, qos: int, client_id: str, sensors: int, clock: Clock | None) -> Any:
    """The gateway's ingest with 1 000 sensors and a cheap event-rule hook."""
    from gateway.config import validate_config
    from gateway.ingest.mqtt import MqttIngest
    from gateway.media.frames import FrameStore
    from gateway.state.store import SensorSnapshot, StateStore

    config = validate_config(
        {
            "gateway": {"name": client_id, "state_dir": "/tmp/things-bench"},
            "mqtt": {
                "port": port,
                "qos": qos,
                "client_id": client_id,
                "persistent_session": True,
            },
            "sensors": [
                {
                    "id": "temp_{device}",
                    "topic": "bench/{device}/SENSOR",
                    "format": "tasmota",
                    "field": "SI7021.Temperature",
                    "range": [-40, 85],
                    "precision": 1,
                    "max_instances": sensors,
                }
            ],
        }
    )
    state = StateStore(windows=config.state.windows, max_sensors=config.state.max_sensors)
    alerts = [0]

    def event_rules(snapshot: SensorSnapshot) -> None:  # like `when = "temp > 30"`
        value = snapshot.value
        if isinstance(value, float) and value > 30.0:
            alerts[0] += 1
        if clock is not None:
            clock.tick()

    ingest = MqttIngest(config, state, FrameStore(Path("/nonexistent"), state), event_rules)
    ingest.start()
    return ingest, state, int(config.state.history_flush_interval.total_seconds() // 60)


def fill_until_flush(state: Any, minutes: int) -> None:
    """Give every sensor one reading a minute for ``minutes`` more minutes, so each has a
    flush interval's worth of finished rows waiting for the history writer."""
    from datetime import UTC, datetime

    now = time.time()
    for sensor, snap in state.sensors().items():
        for k in range(1, minutes + 1):
            t = now + 60 * k
            value = snap.value + k / 10
            state.record(sensor, value, snap.unit, datetime.fromtimestamp(t, UTC), snap.topic, t)


def consume(args: argparse.Namespace) -> None:
    """Run one consumer; print a JSON line with its rate and memory."""
    baseline = 0
    clock = None if args.phase == "subscribe" else Clock(args.messages)
    stop: Callable[[], None]
    if args.kind in ("paho", "client"):
        fast = args.kind == "client"
        client = counting_consumer(args.port, args.qos, args.client_id, clock, fast=fast)
        baseline = vm_kb("VmRSS")
        client.loop_start()

        def stop() -> None:
            client.disconnect()
            client.loop_stop()
    else:
        import gateway.config
        import gateway.ingest.mqtt  # noqa: F401

        baseline = vm_kb("VmRSS")
        ingest, state, flush_minutes = gateway_consumer(
            args.port, args.qos, args.client_id, args.sensors, clock
        )
        ready_kb = vm_kb("VmRSS")  # config validated, ingest built
        stop = ingest.stop
    if clock is None:
        time.sleep(1.0)  # long enough to subscribe; then leave, keeping the session
        stop()
        return
    ok = clock.done.wait(600)
    stop()
    drained_kb = vm_kb("VmRSS")
    if args.kind == "gateway":
        fill_until_flush(state, flush_minutes)
    elapsed = (clock.last - clock.first) if ok else float("nan")
    cpu = (clock.last_cpu - clock.first_cpu) if ok else float("nan")
    result = {
        "received": clock.count,
        "rate": (clock.count - 1) / elapsed if ok and elapsed > 0 else 0.0,
        "cpu_rate": (clock.count - 1) / cpu if ok and cpu > 0 else 0.0,
        "vmhwm_kb": vm_kb("VmHWM"),
        "baseline_kb": baseline,
    }
    if args.kind == "gateway":
        result["sensors_in_state"] = len(state.sensors())
        result["ready_kb"] = ready_kb
        result["drained_kb"] = drained_kb
        # finished minutes only: the one in progress is not waiting for the writer yet
        result["waiting_rows"] = len(state.unwritten_minutes(next(iter(state.sensors())))) - 1
    print(json.dumps(result))


def run_consumer(
    port: int, kind: str, qos: int, phase: str, args: argparse.Namespace, run: int = 0
) -> Any:
    """Run a consumer phase in a fresh process; the consume phase's JSON result."""
    command = [
        sys.executable, __file__, "--consumer", kind, "--phase", phase, "--port", str(port),
        "--qos", str(qos), "--client-id", f"bench-{kind}-q{qos}-{run}",
        "--messages", str(args.messages), "--sensors", str(args.sensors),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1]) if phase == "consume" else None


def measure(port: int, kind: str, qos: int, args: argparse.Namespace, run: int) -> dict[str, Any]:
    """One round on a fresh session (client id), so nothing is left from an earlier round."""
    run_consumer(port, kind, qos, "subscribe", args, run)
    flood(port, qos, args.sensors, args.messages, args.publishers)
    result: dict[str, Any] = run_consumer(port, kind, qos, "consume", args, run)
    return result


def best_of(port: int, kind: str, qos: int, args: argparse.Namespace, runs: list[Any]) -> Any:
    """The fastest of the runs so far (other load on the machine only ever slows a run)."""
    runs.append(measure(port, kind, qos, args, len(runs)))
    return max(runs, key=lambda r: r["rate"])


def main() -> None:
    """Benchmark both consumers at QoS 0 and 1 and print rates, ratios and memory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs per consumer; best counts")
    parser.add_argument("--consumer", choices=["paho", "client", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["subscribe", "consume"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--qos", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer:
        args.kind = args.consumer
        consume(args)
        return
    from gateway.demo.broker import start_broker

    # As pip does when it installs the package: the consumers then load bytecode rather
    # than compiling the gateway's sources at every start (an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would, and would count the compiler's memory as ours).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "gateway")], check=True)
    print(f"{args.messages} JSON readings for {args.sensors} sensors, {args.publishers} publishers")
    with start_broker(prefer="mosquitto", extra_config=BROKER_CONFIG) as broker:
        for qos in (0, 1):
            paho_runs: list[Any] = []
            client_runs: list[Any] = []
            gw_runs: list[Any] = []
            for _ in range(args.repeat):  # interleaved, so drifting load hits all alike
                paho = best_of(broker.port, "paho", qos, args, paho_runs)
                client = best_of(broker.port, "client", qos, args, client_runs)
                gw = best_of(broker.port, "gateway", qos, args, gw_runs)
            ratio = gw["rate"] / paho["rate"] if paho["rate"] else float("nan")
            cpu_ratio = gw["cpu_rate"] / paho["cpu_rate"] if paho["cpu_rate"] else float("nan")
            kept = gw["rate"] / client["rate"] if client["rate"] else float("nan")
            print(
                f"QoS {qos}: (a) bare paho {paho['rate']:9,.0f} msg/s | (b) gateway"
                f" {gw['rate']:9,.0f} msg/s | (b)/(a) {ratio:6.1%} (target >= 90%)"
                f" | received {paho['received']}/{gw['received']} (best of {args.repeat})"
            )
            print(
                f"        per CPU-second of the consumer: paho {paho['cpu_rate']:9,.0f} msg"
                f" | gateway {gw['cpu_rate']:9,.0f} msg | ratio {cpu_ratio:6.1%}"
            )
            print(
                f"        (c) the gateway's client alone {client['rate']:9,.0f} msg/s"
                f" ({client['rate'] / paho['rate']:.2f}x bare paho) | (b)/(c) {kept:6.1%}:"
                " what decoding and state updates leave of the client's ceiling"
            )
            print(
                f"        peak RSS: paho {paho['vmhwm_kb'] / 1024:.1f} MB"
                f" (at start {paho['baseline_kb'] / 1024:.1f} MB);"
                f" gateway {gw['vmhwm_kb'] / 1024:.1f} MB"
                f" (after imports {gw['baseline_kb'] / 1024:.1f} MB, config validated and"
                f" ingest built {gw['ready_kb'] / 1024:.1f} MB, drained"
                f" {gw['drained_kb'] / 1024:.1f} MB; peak with {gw['sensors_in_state']} sensors"
                f" and {gw['waiting_rows']} finished minutes each waiting for the history flush:"
                f" +{(gw['vmhwm_kb'] - gw['ready_kb']) / 1024:.1f} MB over built; target < 45 MB)"
            )


if __name__ == "__main__":
    main()
