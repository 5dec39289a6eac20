"""Memory and start-up of the installed daemon: idle and under load, beside baselines.

Run from the repository: ``python bench/rss.py`` (``--quick``: 2 runs, shorter idle).
It builds a wheel of this checkout and installs it into a fresh venv (pip
byte-compiles it, as on a Pi), or uses ``--venv`` where that was done before.  In the
same run it starts a private mosquitto and local fakes of the HTTP services (the test
suite's), then runs ``things-gateway run`` from that venv with each configuration:

- ``console+file``: a console and a file publisher, 100 sensors, a rule every second;
- ``mastodon+bluesky``: the same plus Mastodon and Bluesky (fakes on 127.0.0.1);
- ``all``: every backend (apprise when installed).

For each: VmRSS once it is connected and idle (``--idle`` seconds after start-up),
then VmRSS and VmHWM after ``--posts`` posts reached every publisher while 1,000
readings a second arrive.  Beside them, the same run's baselines: a bare
interpreter of that venv (``python -c pass``) and one that imports paho-mqtt and
pydantic-settings, the floor any config of the daemon starts from.  Wall time of
``--version`` and ``status`` is measured the same way.  Figures are medians with
their range over ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.demo.broker import Broker, start_broker
from tests.fakes import backends

ROOT = Path(__file__).resolve().parent.parent
SENSORS = 100


def toml_value(value: Any) -> str:
    """A TOML literal for a str, number or list of str."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def config_text(state: Path, broker: Broker, publishers: list[dict[str, Any]]) -> str:
    """A gateway config with SENSORS sensors posting every second to every publisher."""
    ids = [p["id"] for p in publishers]
    text = f"""
[gateway]
name = "rssbench"
state_dir = "{state}"
log_level = "info"

[mqtt]
host = "{broker.host}"
port = {broker.port}
persistent_session = false

[[rules]]
id = "tick"
every = "1s"
text = "Water {{{{ s0 }}}} °C at {{{{ now | time('%H:%M:%S') }}}} #bench https://example.org/pool"
publish_to = {toml_value(ids)}
"""
    for i in range(SENSORS):
        text += f'\n[[sensors]]\nid = "s{i}"\ntopic = "rssbench/s{i}"\nunit = "°C"\n'
    for entry in publishers:
        text += "\n[[publishers]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in entry.items())
    return text


def sent_posts(db: Path, publishers: int) -> int:
    """Posts delivered to every publisher so far."""
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM (SELECT post_id FROM deliveries WHERE status='sent'"
                " GROUP BY post_id HAVING COUNT(*) = ?)",
                (publishers,),
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def proc_memory(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def install(venv: Path) -> None:
    """A wheel of this checkout, pip-installed (byte-compiled) into a fresh venv."""
    with tempfile.TemporaryDirectory() as wheels:
        pip = [sys.executable, "-m", "pip", "-q"]
        subprocess.run([*pip, "wheel", "--no-deps", str(ROOT), "-w", wheels], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        wheel = next(Path(wheels).glob("*.whl"))
        # the x and apprise extras, so the "all" configuration can build every backend
        extras = f"{wheel}[x,apprise]"
        subprocess.run([str(venv / "bin/pip"), "-q", "install", extras], check=True)


class Readings:
    """Publishes a reading to each sensor in turn, ``rate`` a second, until stopped."""

    def __init__(self, broker: Broker, rate: int) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._rate = rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            for _ in range(self._rate // 10):
                self._client.publish(f"rssbench/s{n % SENSORS}", f"{20 + n % 50 / 10:.1f}")
                n += 1

    def stop(self) -> None:
        """Stop publishing and disconnect."""
        self._stop.set()
        self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()


def measure_daemon(
    venv: Path, workdir: Path, name: str, broker: Broker, publishers: list[dict[str, Any]],
    posts: int, idle: float,
) -> dict[str, float]:  # fmt: skip
    """Idle RSS once connected, then RSS and peak after ``posts`` posts under readings."""
    state = workdir / name
    config = workdir / f"{name}.toml"
    config.write_text(config_text(state, broker, publishers), encoding="utf-8")
    log_path = workdir / f"{name}.log"
    process = subprocess.Popen(
        [str(venv / "bin/things-gateway"), "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    readings: Readings | None = None
    try:

        def wait(check: Callable[[], bool], what: str, seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while not check():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise SystemExit(f"{name}: gateway never {what}:\n{tail}")
                time.sleep(0.1)

        wait(lambda: "connected to MQTT broker" in log_path.read_text(errors="replace"),
             "connected", 60)  # fmt: skip
        time.sleep(idle)
        idle_rss = proc_memory(process.pid)["VmRSS"]
        readings = Readings(broker, 1000)
        before = sent_posts(state / "gateway.db", len(publishers))
        wait(lambda: sent_posts(state / "gateway.db", len(publishers)) >= before + posts,
             f"delivered {posts} posts", 60 + 3 * posts)  # fmt: skip
        loaded = proc_memory(process.pid)
        return {"idle": idle_rss, "load": loaded["VmRSS"], "peak": loaded["VmHWM"]}
    finally:
        if readings is not None:
            readings.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def baseline_rss(venv: Path, code: str) -> float:
    """RSS (MiB) of the venv's interpreter after running ``code``."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
    probe = f"{code}\nprint(open('/proc/self/status').read())"
    out = subprocess.run([str(venv / "bin/python"), "-c", probe], capture_output=True, text=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def wall(command: Sequence[str]) -> float:
    """Seconds one run of ``command`` takes."""
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def summary(values: list[float], unit: str, digits: int = 1) -> str:
    """Median and range."""
    ordered = sorted(values)
    mid = statistics.median(ordered)
    return f"{mid:.{digits}f} {unit} ({ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"


def configurations(stack: ExitStack) -> dict[str, list[dict[str, Any]]]:
    """The publisher sets measured, each HTTP one pointing at a fake started on ``stack``."""
    basic: list[dict[str, Any]] = [
        {"id": "console", "type": "console"},
        {"id": "archive", "type": "file"},
    ]
    fakes: dict[str, dict[str, Any]] = {}
    for backend in backends.HTTP_BACKENDS:
        if backend.type == "apprise" and importlib.util.find_spec("apprise") is None:
            continue
        fake = stack.enter_context(backend.make_fake())
        fakes[backend.type] = {"id": backend.type, **backend.config(fake)}
    social = [*basic, fakes["mastodon"], fakes["bluesky"]]
    everything = [*basic, {"id": "bus", "type": "mqtt", "topic": "bench/{rule}/post"}]
    everything += list(fakes.values())
    return {"console+file": basic, "mastodon+bluesky": social, "all": everything}


def main(argv: Sequence[str] | None = None) -> int:
    """Install, measure every configuration ``--runs`` times, print medians and ranges."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--posts", type=int, default=5, help="posts delivered under load")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring")
    parser.add_argument("--venv", type=Path, help="an existing venv with the wheel installed")
    parser.add_argument("--quick", action="store_true", help="2 runs, 3 s idle, 3 posts")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.idle, args.posts = 2, 3.0, 3
    print(
        "bench/rss.py: RSS of the installed, byte-compiled daemon (things-gateway run), idle "
        "and under load (1,000 readings/s, a post a second), and --version/status wall time, "
        f"beside a bare interpreter of the same venv; median (range) of {args.runs} runs"
    )
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        venv = args.venv
        if venv is None:
            venv = tmp / "venv"
            install(venv)
        broker = stack.enter_context(start_broker(prefer="mosquitto"))
        configs = configurations(stack)
        results: dict[str, dict[str, list[float]]] = {name: {} for name in configs}
        bare: list[float] = []
        libs: list[float] = []
        times: dict[str, list[float]] = {"python -c pass": [], "--version": [], "status": []}
        status_config = tmp / "status.toml"
        status_config.write_text(config_text(tmp / "status-state", broker, configs["console+file"]))
        exe = str(venv / "bin/things-gateway")
        for run in range(args.runs):
            bare.append(baseline_rss(venv, "pass"))
            libs.append(baseline_rss(venv, "import paho.mqtt.client, pydantic_settings"))
            times["python -c pass"].append(wall([str(venv / "bin/python"), "-c", "pass"]))
            times["--version"].append(wall([exe, "--version"]))
            times["status"].append(wall([exe, "status", "-c", str(status_config)]))
            for name, publishers in configs.items():
                work = tmp / f"run{run}"
                work.mkdir(exist_ok=True)
                found = measure_daemon(venv, work, name, broker, publishers, args.posts, args.idle)
                for key, value in found.items():
                    results[name].setdefault(key, []).append(value)
    print(f"\nbaseline: bare interpreter {summary(bare, 'MiB')}; "
          f"with paho-mqtt + pydantic-settings imported {summary(libs, 'MiB')}")  # fmt: skip
    print(f"{'configuration':<20} {'idle RSS':>22} {'RSS under load':>22} {'peak (VmHWM)':>22}")
    for name, measured in results.items():
        cells = [summary(measured[k], "MiB") for k in ("idle", "load", "peak")]
        print(f"{name:<20} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22}")
    print()
    for name, values in times.items():
        print(f"wall time {name:<16} {summary([v * 1000 for v in values], 'ms', 0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
