"""fsyncs per post and per hour in a steady state: 1 000 sensors publishing every 10 s.

Starts a private mosquitto and ``things-gateway run``, lets it warm up, then attaches
``strace -f -y -e trace=fsync,fdatasync`` to every thread of the gateway for a few
minutes while a publisher sends 1 000 sensors' readings every 10 s (100 messages/s,
spread evenly).  It does so twice in the same run: without a rule (the baseline:
what readings, history flushes and health cost) and with a rule posting to a file
archive every ``--rule-every`` (default 1m, so a few minutes see several posts).
It prints each run's fsyncs by file, the fsyncs per post (the rule run's count less
the baseline's rate over the same time, over the posts made) and the hour at a post
every ``--budget-every`` (5m): baseline per hour + posts per hour x fsyncs per post.
Target: at most 120 an hour.

    python bench/fsync.py                       # 2 x 3 minutes
    python bench/fsync.py --quick               # 2 x 1.5 minutes
    python bench/fsync.py --minutes 10          # steadier

Needs strace (``apt install strace``) and the right to ptrace (root or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import sqlite3
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


_CALL = re.compile(r"(fsync|fdatasync)\(\d+<([^>]*)>\)")


def count_calls(trace: str) -> collections.Counter[str]:
    """fsync + fdatasync calls in an ``strace -y`` log, by file (the folder for a folder)."""
    found: collections.Counter[str] = collections.Counter()
    for match in _CALL.finditer(trace):
        found[Path(match.group(2)).name or match.group(2)] += 1
    return found


def posts_made(state: Path) -> int:
    """Posts in the gateway's outbox."""
    try:
        with sqlite3.connect(state / "gateway.db") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM posts").fetchone()[0])
    except sqlite3.Error:
        return 0


def run_once(
    args: argparse.Namespace, rule_every: str | None
) -> tuple[collections.Counter[str], float, int, float]:
    """One traced run: (fsyncs by file, seconds traced, posts made while traced, msg/s)."""
    work = Path(tempfile.mkdtemp(prefix="things-fsync-"))
    with start_broker(prefer="mosquitto") as broker:
        config = work / "gateway.toml"
        write_config(config, broker.port, work / "state", args.sensors, rule_every)
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)])
        publisher = Publisher(broker.port, args.sensors, args.period)
        try:
            publisher.run_until(time.monotonic() + args.warmup)
            tids = [t for t in os.listdir(f"/proc/{gateway.pid}/task")]
            out = work / "strace.txt"
            attach = [a for tid in tids for a in ("-p", tid)]
            tracer = subprocess.Popen(
                ["strace", "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(out), *attach],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # let strace attach
            sent_before = publisher.sent
            posts_before = posts_made(work / "state")
            started = time.monotonic()
            publisher.run_until(started + args.minutes * 60)
            elapsed = time.monotonic() - started
            posts = posts_made(work / "state") - posts_before
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        finally:
            publisher.close()
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
    calls = count_calls(out.read_text())
    rate = (publisher.sent - sent_before) / elapsed
    shutil.rmtree(work, ignore_errors=True)
    return calls, elapsed, posts, rate


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]]


def measure(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    if shutil.which("strace") is None:
        print("bench/fsync.py: strace is not installed (apt install strace)", file=sys.stderr)
        return 1
    print(
        f"bench/fsync.py: fsync+fdatasync of things-gateway run (strace) with {args.sensors} "
        f"sensors every {args.period:g}s, {args.minutes:g} min without a rule (baseline) "
        f"and {args.minutes:g} min with a post to a file archive every {args.rule_every}"
    )
    base, base_s, _, rate = run_once(args, None)
    ruled, ruled_s, posts, _ = run_once(args, args.rule_every)
    base_total, ruled_total = sum(base.values()), sum(ruled.values())
    print(f"readings: {rate:.0f} msg/s")
    print(f"baseline (no rule): {base_total} in {base_s:.0f}s  {dict(base.most_common())}")
    print(f"rule run ({posts} posts): {ruled_total} in {ruled_s:.0f}s  {dict(ruled.most_common())}")
    base_hour = base_total * 3600 / base_s
    if posts == 0:
        print("no post was made while traced: lengthen --minutes")
        return 2
    per_post = (ruled_total - base_total * ruled_s / base_s) / posts
    per_hour = base_hour + 3600 / _seconds(args.budget_every) * per_post
    print(f"fsyncs per post: {per_post:.1f}; baseline {base_hour:.0f} an hour (history flush,")
    print(f"  health); at a post every {args.budget_every}: {per_hour:.0f} an hour (target <= 120)")
    return 0 if per_hour <= 120 else 2


def main() -> int:
    """Parse options and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each traced run")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--rule-every", default="1m", help="the rule run's interval")
    parser.add_argument("--budget-every", default="5m", help="the post interval to project")
    parser.add_argument("--quick", action="store_true", help="2 x 1.5 minutes")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 1.5
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
