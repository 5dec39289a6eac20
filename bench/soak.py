"""Memory of the installed daemon over a long run: RSS every minute, slope, peak, reloads.

Run from the repository with the venv the gateway is installed in::

    .venv/bin/python bench/soak.py                      # 30 minutes
    .venv/bin/python bench/soak.py --minutes 8 --post-every 10 --reload-every 30 --warmup 2

In one run it starts a private mosquitto, a local HTTP server on 127.0.0.1 (the
webhook target) and a publisher of 3 sensors and 1920x1080 JPEG camera frames, then
runs ``<venv>/bin/things-gateway run -c <config>`` twice, side by side, as users run it:

- soak: 3 sensors, a camera, a rule posting text + photo + chart + timelapse every
  ``--post-every`` seconds, a threshold rule (the water crosses 26 °C every few
  minutes), to a ``file`` archive and a multipart ``webhook``; SIGHUP every
  ``--reload-every`` seconds;
- baseline: the same config with no rule firing and no reload (idle RSS over the
  same minutes, on the same machine).

Every minute it prints VmRSS (and VmHWM, the peak) of both from /proc/<pid>/status,
the posts delivered and the daemon's thread count; at the end the least-squares slope
of RSS after ``--warmup`` minutes (MB/hour), the peak, RSS idle and after the first
post, and the RSS change across each reload (median and range).  MB here is MiB.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices.simulate import make_frame
from gateway.demo.broker import Broker, start_broker

RELOADED = "reload: running on the new config"
FRAMES = 12
"""Distinct frames cycled by the publisher (rendering 1920x1080 JPEGs costs CPU)."""


def config_text(
    name: str, state: Path, broker: Broker, hook_url: str, post_every: int, *, idle: bool
) -> str:
    """The realistic config of issue #13; ``idle``: the same, with no rule ever firing."""
    every = "30d" if idle else f"{post_every}s"
    threshold = "water_temp > 1000" if idle else "water_temp > 26"
    return f"""
[gateway]
name = "{name}"
timezone = "UTC"
state_dir = "{state}"
log_level = "info"

[mqtt]
host = "{broker.host}"
port = {broker.port}
protocol = 311
persistent_session = false

[media]
keep_recent_frames = 30
keep_frame_every = "30s"

[[sensors]]
id = "water_temp"
topic = "soak/pool/temperature"
format = "number"
unit = "°C"
expire_after = "5m"

[[sensors]]
id = "air_temp"
topic = "soak/weather/SENSOR"
format = "json"
field = "AM2301.Temperature"
unit = "°C"
expire_after = "5m"

[[sensors]]
id = "humidity"
topic = "soak/weather/SENSOR"
format = "json"
field = "AM2301.Humidity"
unit = "%"

[[cameras]]
id = "pool"
source = "mqtt"
topic = "soak/cam/pool"
max_age = "5m"

[[rules]]
id = "status"
every = "{every}"
text = "Pool {{{{ now | time('%H:%M:%S') }}}}: {{{{ water_temp }}}} {{{{ water_temp | arrow }}}}, \
air {{{{ air_temp }}}}, {{{{ humidity }}}} #poolcam"
publish_to = ["archive", "hook"]

[[rules.images]]
camera = "pool"
caption = "{{{{ water_temp }}}} · {{{{ now | time }}}}"
alt = "The pool at {{{{ now | time }}}}"

[[rules.charts]]
sensor = "water_temp"
window = "24h"
title = "Water temperature"
alt = "Water over 24 hours; now {{{{ water_temp }}}}"

[rules.timelapse]
camera = "pool"
window = "1h"
frames = 24
format = "webp"
alt = "The pool over the last hour"

[[rules]]
id = "warm"
when = "{threshold}"
clear_below = 25.5
text = "The water is warm: {{{{ water_temp }}}}"
images = [{{ camera = "pool", alt = "The pool when it got warm" }}]
publish_to = ["archive", "hook"]

[[publishers]]
id = "archive"
type = "file"
path = "posts"

[[publishers]]
id = "hook"
type = "webhook"
url = "{hook_url}"
format = "multipart"
"""


class _Hook(BaseHTTPRequestHandler):
    """Accepts every POST (reading the body) with 200, like a webhook receiver."""

    received = 0

    def do_POST(self) -> None:
        """Read the body and answer 200."""
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received += 1
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def webhook_server() -> Iterator[str]:
    """A local HTTP server on 127.0.0.1; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


class Devices:
    """3 sensors every 2 s and a JPEG frame every ``frame_every`` s, from a thread.

    The water temperature swings 24–28 °C over 4 minutes, so the threshold rule fires.
    """

    def __init__(self, broker: Broker, frame_every: float, size: tuple[int, int]) -> None:
        start = datetime.now(UTC)
        self.frames = [make_frame(start + timedelta(seconds=7 * i), *size) for i in range(FRAMES)]
        self.frame_every = frame_every
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devices", daemon=True)

    def start(self) -> None:
        """Start publishing."""
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        next_frame = 0.0
        sent = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - started
            water = 26.0 + 2.0 * math.sin(2 * math.pi * elapsed / 240)
            air = 18.0 + 3.0 * math.sin(2 * math.pi * elapsed / 600)
            self.client.publish("soak/pool/temperature", f"{water:.2f}", qos=1)
            payload = f'{{"AM2301": {{"Temperature": {air:.1f}, "Humidity": {55 + sent % 10}}}}}'
            self.client.publish("soak/weather/SENSOR", payload, qos=1)
            if elapsed >= next_frame:
                frame = self.frames[sent % len(self.frames)]
                self.client.publish("soak/cam/pool", frame, qos=1, retain=True)
                next_frame = elapsed + self.frame_every
                sent += 1
            self._stop.wait(2.0)

    def stop(self) -> None:
        """Stop publishing and disconnect."""
        self._stop.set()
        self._thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) and Threads of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            fields[name] = int(value.split()[0])
    return fields


def rss_parts(pid: int) -> dict[str, int]:
    """RSS (kB) by kind of mapping from /proc/<pid>/smaps: the C heap, other anonymous
    memory (mmap'd blocks, arenas of threads, stacks) and file-backed pages (code, SQLite's
    memory-mapped files)."""
    parts = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5:
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif line.startswith("Rss:"):
            parts[kind] += int(line.split()[1])
    return parts


def delivered(db: Path) -> int:
    """Deliveries sent so far."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM deliveries WHERE status='sent'").fetchone()[0]
            )
    except sqlite3.Error:
        return 0


@dataclass
class Daemon:
    """One ``things-gateway run`` subprocess and what was seen of it."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    db: Path
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(minutes since start, VmRSS MiB)"""

    def status(self) -> dict[str, int]:
        """Its /proc status fields; exits the bench if it died."""
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise SystemExit(
                f"{self.name}: the gateway exited ({self.process.returncode}):\n{tail}"
            )
        return proc_status(self.process.pid)

    def is_running(self) -> bool:
        """True once the gateway logged that it runs (started, not yet posting)."""
        return f"gateway {self.name} running" in self.log.read_text(errors="replace")

    def reloads_applied(self) -> int:
        """Reloads the daemon logged as applied."""
        return self.log.read_text(errors="replace").count(RELOADED)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_daemon(
    gateway: Path, name: str, work: Path, text: str, env: dict[str, str], stack: ExitStack
) -> Daemon:
    """Write the config and start the installed daemon on it."""
    config = work / f"{name}.toml"
    config.write_text(text, encoding="utf-8")
    log = work / f"{name}.log"
    process = subprocess.Popen(
        [str(gateway), "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, **env},
    )
    daemon = Daemon(name, process, log, work / name / "gateway.db")
    stack.callback(daemon.stop)
    return daemon


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MiB) in MiB per hour."""
    if len(samples) < 2:
        return float("nan")
    xs = [x for x, _ in samples]
    ys = [y for _, y in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return 60 * sxy / sxx if sxx else float("nan")


def floor_samples(samples: list[tuple[float, float]], minutes: float) -> list[tuple[float, float]]:
    """The lowest RSS of each ``minutes``-long stretch, at that stretch's middle.

    A sample taken while a post renders carries up to ~15 MB of buffers that are freed a
    moment later; the lowest sample of a stretch is what the daemon keeps.  Its slope
    is the growth, with less of the noise of when a sample happened to fall.
    """
    stretches: dict[int, list[float]] = {}
    for at, rss in samples:
        stretches.setdefault(int(at // minutes), []).append(rss)
    return [((k + 0.5) * minutes, min(v)) for k, v in sorted(stretches.items())]


def mib(kb: int) -> float:
    """kB to MiB."""
    return kb / 1024


def summary(values: list[float]) -> str:
    """Median and range of a list of figures."""
    if not values:
        return "n/a"
    return (
        f"median {statistics.median(values):+.2f} (range {min(values):+.2f} .. {max(values):+.2f})"
    )


def run(args: argparse.Namespace) -> int:
    """Run the soak; returns 0 when the targets were met, 2 when not."""
    env = dict(item.split("=", 1) for item in args.env)
    out = io.StringIO()
    print(
        f"things-gateway soak: RSS of the installed daemon ({args.gateway})"
        f" over {args.minutes:g} min"
        f", a post (photo+chart+timelapse) every {args.post_every}s, a reload every"
        f" {args.reload_every}s, beside an idle baseline (same config, no rule firing, no reload)"
        + (f"; env {' '.join(args.env)}" if args.env else ""),
        flush=True,
    )
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="things-soak-")))
        broker = stack.enter_context(start_broker(prefer="mosquitto"))
        hook = stack.enter_context(webhook_server())
        devices = Devices(broker, args.frame_every, (args.width, args.height))
        stack.callback(devices.stop)
        devices.start()
        soak = start_daemon(
            args.gateway,
            "soak",
            work,
            config_text("soak", work / "soak", broker, hook, args.post_every, idle=False),
            env,
            stack,
        )
        base = start_daemon(
            args.gateway,
            "baseline",
            work,
            config_text("baseline", work / "baseline", broker, hook, args.post_every, idle=True),
            env,
            stack,
        )
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started
        next_print = started + 60
        next_reload = started + args.reload_every
        idle_rss: float | None = None
        first_post_rss: float | None = None
        first_post_at: float | None = None
        reload_deltas: list[float] = []
        pending: tuple[int, float, float] | None = None  # (applied before, RSS before, due)
        reloads_sent = 0
        print(
            f"{'min':>5} {'soak RSS':>9} {'peak':>7} {'threads':>7} {'sent':>5} {'reloads':>7}"
            f" | {'baseline RSS':>12} {'peak':>7}"
            + (f" | {'heap':>6} {'anon':>6} {'file':>6}" if args.parts else ""),
            flush=True,
        )
        while (now := time.monotonic()) < end:
            minutes = (now - started) / 60
            s = soak.status()
            sent = delivered(soak.db)
            if sent == 0 and idle_rss is None and soak.is_running():
                idle_rss = mib(s["VmRSS"])
            if sent and first_post_at is None:
                first_post_at = now + args.settle
            if first_post_at is not None and first_post_rss is None and now >= first_post_at:
                first_post_rss = mib(s["VmRSS"])
            if now >= next_sample:
                soak.samples.append((minutes, mib(s["VmRSS"])))
                base.samples.append((minutes, mib(base.status()["VmRSS"])))
                next_sample += args.sample_every
            if now >= next_print:
                b = base.status()
                print(
                    f"{minutes:5.1f} {mib(s['VmRSS']):9.1f} {mib(s['VmHWM']):7.1f}"
                    f" {s['Threads']:7d} {sent:5d} {soak.reloads_applied():7d}"
                    f" | {mib(b['VmRSS']):12.1f} {mib(b['VmHWM']):7.1f}"
                    + (
                        " | "
                        + " ".join(f"{mib(v):6.1f}" for v in rss_parts(soak.process.pid).values())
                        if args.parts
                        else ""
                    ),
                    flush=True,
                )
                next_print += 60
            if pending is not None and soak.reloads_applied() > pending[0]:
                if pending[2] == 0.0:
                    # let the new gateway start its threads before reading RSS
                    pending = (pending[0], pending[1], now + args.settle)
                elif now >= pending[2]:
                    reload_deltas.append(mib(s["VmRSS"]) - pending[1])
                    pending = None
            if now >= next_reload and pending is None:
                pending = (soak.reloads_applied(), mib(s["VmRSS"]), 0.0)
                soak.process.send_signal(signal.SIGHUP)
                reloads_sent += 1
                next_reload = now + args.reload_every
            time.sleep(1.0)
        final = soak.status()
        final_base = base.status()
        sent = delivered(soak.db)
        reloads = soak.reloads_applied()
    after = [(m, r) for m, r in soak.samples if m >= args.warmup]
    base_after = [(m, r) for m, r in base.samples if m >= args.warmup]
    slope = slope_per_hour(after)
    base_slope = slope_per_hour(base_after)
    stretch = max(args.reload_every / 60, 1.0)
    floor_slope = slope_per_hour(floor_samples(after, stretch))
    base_floor_slope = slope_per_hour(floor_samples(base_after, stretch))
    peak = mib(final["VmHWM"])
    print(
        f"soak: {sent} deliveries sent, {reloads}/{reloads_sent} reloads applied,"
        f" webhook received {_Hook.received}",
        file=out,
    )
    print(
        f"  idle RSS (once started): {idle_rss or float('nan'):.1f} MB;"
        f" {args.settle:g}s after the first post: {first_post_rss or float('nan'):.1f} MB",
        file=out,
    )
    print(
        f"  RSS at the end: soak {mib(final['VmRSS']):.1f} MB, baseline"
        f" {mib(final_base['VmRSS']):.1f} MB",
        file=out,
    )
    print(
        f"  peak (VmHWM): soak {peak:.1f} MB, baseline {mib(final_base['VmHWM']):.1f} MB"
        f" (target < {args.max_peak:g})",
        file=out,
    )
    print(
        f"  slope after {args.warmup:g} min (least squares, {len(after)} samples): soak"
        f" {slope:+.2f} MB/hour, baseline {base_slope:+.2f} MB/hour"
        f" (target < {args.max_slope:g})",
        file=out,
    )
    print(
        f"  slope of the lowest RSS of each {stretch:g} min: soak {floor_slope:+.2f} MB/hour,"
        f" baseline {base_floor_slope:+.2f} MB/hour",
        file=out,
    )
    print(
        f"  RSS change across a reload ({len(reload_deltas)}, {args.settle:g}s after it applied):"
        f" {summary(reload_deltas)} MB",
        file=out,
    )
    print(out.getvalue(), end="", flush=True)
    ok = slope < args.max_slope and peak < args.max_peak and reloads == reloads_sent
    return 0 if ok else 2


def main() -> int:
    """Parse options and run the soak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    parser.add_argument("--post-every", type=int, default=30, help="seconds between posts")
    parser.add_argument("--reload-every", type=float, default=120.0, help="seconds between SIGHUPs")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slope")
    parser.add_argument("--frame-every", type=float, default=5.0, help="seconds between frames")
    parser.add_argument("--width", type=int, default=1920, help="camera frame width")
    parser.add_argument("--height", type=int, default=1080, help="camera frame height")
    parser.add_argument(
        "--sample-every", type=float, default=10.0, help="seconds between RSS samples"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after a reload before reading RSS"
    )
    parser.add_argument("--max-slope", type=float, default=1.0, help="target slope, MB/hour")
    parser.add_argument("--max-peak", type=float, default=100.0, help="target peak, MB")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also print the soak daemon's RSS as C heap, other anonymous and file-backed MB",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for both daemons, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    parser.add_argument(
        "--gateway",
        type=Path,
        default=Path(sys.executable).parent / "things-gateway",
        help="the installed things-gateway (default: beside this Python)",
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
