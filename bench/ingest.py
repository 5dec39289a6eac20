"""Ingest benchmark: the real daemon draining a flood, end to end, beside bare paho.

Usage::

    python bench/ingest.py            # 10,000 and 50,000 sensors, 3 runs of each case
    python bench/ingest.py --quick    # 10,000 sensors, 100,000 messages, 2 runs

For each number of sensors, MQTT protocol (3.1.1 and 5) and broker setting
(mosquitto's default ``max_inflight_messages 20``, and a tuned 1000), two consumers
drain the same queued flood the same way:

1. the consumer connects with a persistent session, subscribes (QoS 1), and leaves;
2. publisher processes flood the broker with Tasmota-style JSON readings
   round-robin over the sensors (mosquitto queues them: ``max_queued_messages 0``),
   then one marker message;
3. the consumer is started as a new process, and the clock runs from its start to
   the moment the marker was handled.

Consumer "paho" is a bare paho subscriber that counts and exits on the marker.
Consumer "daemon" is ``things-gateway run`` with every sensor declared
(``max_sensors`` raised to fit) and an ``on_message`` rule on the marker topic posting
to a file archive: the clock stops when that post is in ``posts.jsonl``, so every
reading before it went through the daemon's ingest (decode, state, windows).  Both
include interpreter start-up and connecting; each is also run with an empty queue
(only the marker) in the same run, and the drain rate is messages / (time - that).
The daemon's peak RSS (VmHWM) is read before it is stopped.  Figures are medians with
their range; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.enums import MQTTProtocolVersion as Protocol
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.demo.broker import Broker, start_broker  # noqa: E402

TOPIC = "bench/s{sensor}/SENSOR"
MARKER = "benchmark/marker"
BROKERS = {"inflight 20 (default)": 20, "inflight 1000 (tuned)": 1000}
PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


def payload(sensor: int, n: int) -> bytes:
    """A Tasmota SENSOR message."""
    temp = 15.0 + (sensor % 100) / 10 + (n % 50) / 100
    body = {"Time": "2026-05-01T12:00:00", "SI7021": {"Temperature": round(temp, 2)}}
    return json.dumps(body, separators=(",", ":")).encode()


def publish_share(port: int, sensors: int, start: int, stop: int) -> None:
    """Publish messages ``start..stop`` (round-robin over sensors) at QoS 1, all acknowledged."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [
        client.publish(TOPIC.format(sensor=n % sensors), payload(n % sensors, n), qos=1)
        for n in range(start, stop)
    ]
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def flood(port: int, sensors: int, messages: int, publishers: int = 2) -> None:
    """``messages`` readings from ``publishers`` processes, then the marker."""
    step = -(-messages // publishers) if messages else 0
    procs = [
        multiprocessing.Process(
            target=publish_share,
            args=(port, sensors, i * step, min(messages, (i + 1) * step)),
        )
        for i in range(publishers if messages else 0)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(MARKER, '{"done": 1}', qos=1).wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


# -- bare paho: runs as `python bench/ingest.py --paho-consumer ...` -----------------------


def paho_consumer(port: int, protocol: Protocol, client_id: str, subscribe_only: bool) -> None:
    """Subscribe with a persistent session; count until the marker (or just subscribe)."""
    if protocol == mqtt.MQTTv5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
            clean_session=False,
        )  # fmt: skip
    count = 0
    done = False

    def on_connect(c: mqtt.Client, *_args: object) -> None:
        c.subscribe([("bench/#", 1), (MARKER, 1)])

    def on_subscribe(c: mqtt.Client, *_args: object) -> None:
        nonlocal done
        done = done or subscribe_only

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count, done
        count += 1
        done = done or msg.topic == MARKER  # acknowledged before we disconnect

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    if protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.connect("127.0.0.1", port)
    while not done:
        client.loop(0.1)
    client.loop(0.05)  # the last PUBACK goes out
    client.disconnect()
    print(count)


def run_paho(
    port: int, protocol: Protocol, client_id: str, subscribe_only: bool = False
) -> tuple[float, int]:
    """Seconds a bare paho consumer process takes, from its start to the marker, and the
    messages it saw."""
    began = time.perf_counter()
    command = [
        sys.executable,
        __file__,
        "--paho-consumer",
        str(port),
        str(int(protocol)),
        client_id,
    ]
    out = subprocess.run([*command, *(["--subscribe-only"] if subscribe_only else [])],
                         check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    return time.perf_counter() - began, int(out.stdout.split()[-1])


# -- the daemon -----------------------------------------------------------------------------


def daemon_config(folder: Path, port: int, protocol: str, sensors: int) -> Path:
    """Every sensor declared; a rule posting to a file archive when the marker arrives."""
    parts = [
        f'[gateway]\nname = "ingestbench"\nstate_dir = "{folder / "state"}"\nlog_level = "info"\n',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nprotocol = {5 if protocol == "5" else 311}'
        '\npersistent_session = true\nclient_id = "bench-daemon"\n',
        f"[state]\nmax_sensors = {sensors + 10}\n",
        '[[publishers]]\nid = "archive"\ntype = "file"\n',
        f'[[rules]]\nid = "marker"\non_message = {{ topic = "{MARKER}" }}\n'
        'text = "drained"\npublish_to = ["archive"]\n',
    ]
    return write_config(folder, parts, sensors)


def write_config(folder: Path, parts: list[str], sensors: int) -> Path:
    """``folder/gateway.toml``: ``parts`` and ``sensors`` Tasmota sensors on ``TOPIC``
    (also used by bench/startup.py)."""
    parts = parts + [
        f'[[sensors]]\nid = "s{i}"\ntopic = "{TOPIC.format(sensor=i)}"\nformat = "tasmota"\n'
        'field = "SI7021.Temperature"\n'
        for i in range(sensors)
    ]
    path = folder / "gateway.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def vm_kb(pid: int, field: str) -> int:
    """A ``Vm*`` line of /proc/<pid>/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_daemon(
    config: Path, posts_before: int, subscribe_only: bool = False
) -> tuple[float, int, int]:
    """Seconds from starting ``things-gateway run`` to the marker's post; its VmHWM (kB);
    the readings it took (from its "ingest totals" line at stop)."""
    archive = config.parent / "state" / "posts" / "posts.jsonl"
    log_path = config.parent / "daemon.log"
    log_path.write_bytes(b"")
    log = log_path.open("ab")
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    elapsed, peak = 0.0, 0
    try:
        deadline = began + 600
        while True:
            if subscribe_only:
                if "connected to MQTT broker" in log_path.read_text(errors="replace"):
                    time.sleep(1.0)  # its SUBSCRIBE is out right after
                    break
            elif archive.exists() and archive.read_bytes().count(b"\n") > posts_before:
                elapsed = time.perf_counter() - began
                peak = vm_kb(proc.pid, "VmHWM")
                break
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"the daemon stopped or timed out; see {log_path}")
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    totals = re.findall(r"ingest totals: \d+ messages, (\d+) readings", log_path.read_text())
    return elapsed, peak, int(totals[-1]) if totals else -1


# -- the run --------------------------------------------------------------------------------


@contextmanager
def broker_with(inflight: int) -> Iterator[Broker]:
    """A private mosquitto queueing everything for an absent persistent session."""
    extra = ["max_queued_messages 0", f"max_inflight_messages {inflight}"]
    with start_broker(prefer="mosquitto", extra_config=extra) as broker:
        yield broker


def summary(values: list[float], unit: str, scale: float = 1.0, digits: int = 2) -> str:
    """Median and range."""
    v = sorted(x * scale for x in values)
    return f"{statistics.median(v):.{digits}f} {unit} ({v[0]:.{digits}f}-{v[-1]:.{digits}f})"


def case(args: argparse.Namespace, sensors: int, protocol: str, inflight: int) -> None:
    """Both consumers, ``args.runs`` times each, full and empty queue; one table row each."""
    times: dict[str, list[float]] = {"paho": [], "daemon": [], "paho-empty": [], "daemon-empty": []}
    peaks: list[float] = []
    with broker_with(inflight) as broker, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = daemon_config(folder, broker.port, protocol, sensors)
        pid = f"bench-paho-{os.getpid()}"
        run_paho(broker.port, PROTOCOLS[protocol], pid, subscribe_only=True)
        run_daemon(config, 0, subscribe_only=True)
        posts = 0
        for _ in range(args.runs):
            for messages, suffix in ((args.messages, ""), (0, "-empty")):
                flood(broker.port, sensors, messages)  # queued for both sessions
                seconds, seen = run_paho(broker.port, PROTOCOLS[protocol], pid)
                times["paho" + suffix].append(seconds)
                if seen != messages + 1:
                    print(f"  paho saw {seen} messages, not {messages + 1}: its figure is off")
                elapsed, peak, readings = run_daemon(config, posts)
                if readings != messages:
                    print(f"  the daemon took {readings} readings, not {messages}")
                posts += 1
                times["daemon" + suffix].append(elapsed)
                if not suffix:
                    peaks.append(peak / 1024)
    setting = next(k for k, v in BROKERS.items() if v == inflight)
    label = f"{sensors:>6} sensors, MQTT {protocol:<5}, {setting}"
    rates = {}
    for who in ("paho", "daemon"):
        full, empty = times[who], times[who + "-empty"]
        rates[who] = [args.messages / max(1e-3, f - statistics.median(empty)) for f in full]
        print(f"{label} | {who:<6} {summary(full, 's')}  empty queue {summary(empty, 's')}"
              f"  drain {summary(rates[who], 'k msg/s', 1e-3, 1)}")  # fmt: skip
    ratio = statistics.median(rates["daemon"]) / statistics.median(rates["paho"])
    print(
        f"{label} | daemon/paho drain rate {ratio:.2f}x;"
        f" daemon peak RSS {summary(peaks, 'MiB', digits=1)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run every case (or be the paho consumer process)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--paho-consumer":
        port, protocol, client_id = int(argv[1]), Protocol(int(argv[2])), argv[3]
        paho_consumer(port, protocol, client_id, "--subscribe-only" in argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument(
        "--quick", action="store_true", help="10,000 sensors, 50,000 messages, 2 runs"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sensors, args.messages, args.runs = [10_000], 100_000, 2
    print(
        f"bench/ingest.py: seconds from starting a consumer to its handling the last of "
        f"{args.messages:,} queued QoS 1 readings (Tasmota JSON): the daemon (things-gateway "
        f"run, every sensor declared) beside bare paho, same protocol and broker; "
        f"median (range) of {args.runs} runs; 2 shared cores, noisy"
    )
    for sensors in args.sensors:
        for protocol in args.protocols:
            for inflight in BROKERS.values():
                case(args, sensors, protocol, inflight)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
