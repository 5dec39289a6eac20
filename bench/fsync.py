"""fsyncs per hour in a steady state: 1 000 sensors publishing every 10 s.

Starts a private mosquitto and ``things-gateway run``, lets it warm up, then attaches
``strace -c -f -e trace=fsync,fdatasync`` to every thread of the gateway for a few
minutes while a publisher sends 1 000 sensors' readings every 10 s (100 messages/s,
spread evenly), and prints the count extrapolated to an hour.  Target: at most 120.

    python bench/fsync.py                 # 3 minutes of measurement
    python bench/fsync.py --minutes 10 --rule-every 5m   # with a post every 5 minutes

Needs strace (``apt install strace``) and the right to ptrace (root or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import start_broker


def write_config(path: Path, port: int, state: Path, sensors: int, rule_every: str | None) -> None:
    """A config with ``sensors`` number sensors (and an optional rule to a file archive)."""
    parts = [
        f'[gateway]\nname = "bench"\nstate_dir = "{state}"\nlog_level = "warning"\n',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\npersistent_session = false\n',
        *(
            f'[[sensors]]\nid = "s{i}"\ntopic = "bench/s/{i}"\nexpire_after = "1m"\n'
            for i in range(sensors)
        ),
        '[[publishers]]\nid = "archive"\ntype = "file"\n',
    ]
    if rule_every:
        parts.append(
            f'[[rules]]\nid = "r"\nevery = "{rule_every}"\n'
            'text = "s0 is {{ s0 }}"\npublish_to = ["archive"]\n'
        )
    path.write_text("\n".join(parts), encoding="utf-8")


class Publisher:
    """Publishes every sensor once per ``period`` seconds, evenly spread."""

    def __init__(self, port: int, sensors: int, period: float) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sensors = sensors
        self.gap = period / sensors
        self.sent = 0

    def run_until(self, deadline: float) -> None:
        """Publish until the monotonic ``deadline``."""
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            i = self.sent % self.sensors
            self.client.publish(f"bench/s/{i}", f"{20 + (self.sent % 50) / 10:.1f}", qos=1)
            self.sent += 1
            next_at += self.gap
            time.sleep(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def count_calls(summary: str) -> int:
    """fsync + fdatasync calls in an ``strace -c`` summary."""
    total = 0
    for line in summary.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync") and parts[3].isdigit():
            total += int(parts[3])
    return total


def measure(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    if shutil.which("strace") is None:
        print("bench/fsync.py: strace is not installed (apt install strace)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="things-fsync-"))
    with start_broker(prefer="mosquitto") as broker:
        config = work / "gateway.toml"
        write_config(config, broker.port, work / "state", args.sensors, args.rule_every)
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)])
        publisher = Publisher(broker.port, args.sensors, args.period)
        try:
            publisher.run_until(time.monotonic() + args.warmup)
            tids = [t for t in os.listdir(f"/proc/{gateway.pid}/task")]
            out = work / "strace.txt"
            attach = [a for tid in tids for a in ("-p", tid)]
            tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-e", "trace=fsync,fdatasync", "-o", str(out), *attach],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # let strace attach
            sent_before = publisher.sent
            started = time.monotonic()
            publisher.run_until(started + args.minutes * 60)
            elapsed = time.monotonic() - started
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        finally:
            publisher.close()
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
    calls = count_calls(out.read_text())
    per_hour = calls * 3600 / elapsed
    rate = (publisher.sent - sent_before) / elapsed
    print(
        f"{args.sensors} sensors every {args.period:g}s ({rate:.0f} msg/s), "
        f"rule every {args.rule_every or 'never'}: {calls} fsync+fdatasync in {elapsed:.0f}s "
        f"= {per_hour:.0f} per hour (target <= 120)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if per_hour <= 120 else 2


def main() -> int:
    """Parse options and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--minutes", type=float, default=3.0, help="measurement length")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--rule-every", default=None, help='add a rule, e.g. "5m"')
    return measure(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
