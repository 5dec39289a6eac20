"""Start-up and resubscription with many declared sensors: the daemon beside bare paho.

Usage::

    python bench/startup.py                  # 100, 1,000, 10,000 and 50,000 sensors, 5 runs
    python bench/startup.py --quick          # 1,000 and 10,000 sensors, 3 runs

For each number of sensors, ``things-gateway run`` is started with every sensor declared
(one topic each, ``max_sensors`` raised to fit), against a private mosquitto that logs
every subscription to its stdout, which this script reads line by line and timestamps.
Beside it, in the same run and against the same broker, a bare paho client subscribes
to exactly the same topic filters (read from the broker's log of the daemon's first
start) in one SUBSCRIBE, at QoS 1, with the same protocol (MQTT 5).

Figures, each the median and range of the runs:

- **start**: from ``exec`` of the process to the broker logging its last subscription
  (both consumers; this includes interpreter start-up, imports and reading the config);
  for the daemon also to ``READY=1`` on its ``NOTIFY_SOCKET``, which systemd waits for;
- **resubscribe**: the broker is stopped and started again (no persistence, so the
  session is gone) while both clients run; from the broker logging each client's new
  connection to its last subscription: the work every reconnection costs.

The target is at most 2 s for both with 10,000 sensors.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.demo.broker import find_free_port, find_mosquitto  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import write_config  # noqa: E402  (the same sensors as the ingest bench)

DAEMON_ID = "bench-daemon"
PAHO_ID = "bench-paho"


class Broker:
    """A mosquitto on a fixed port whose log lines are timestamped as they arrive."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type notice\nlog_type subscribe\n"
            "max_inflight_messages 20\nsys_interval 0\n",
            encoding="utf-8",
        )
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        binary = find_mosquitto()
        if binary is None:
            raise SystemExit("bench/startup.py needs mosquitto (apt install mosquitto)")
        self._proc = subprocess.Popen([str(binary), "-c", str(self.conf)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)  # fmt: skip
        threading.Thread(target=self._read, args=(self._proc,), daemon=True).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        raise SystemExit("mosquitto did not start")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamp = time.perf_counter()
            with self._lock:
                self.lines.append((stamp, line.rstrip("\n")))

    def stop(self) -> None:
        """Stop mosquitto (clients see the connection drop)."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def mark(self) -> int:
        """The index of the next log line (to look only at what comes after)."""
        with self._lock:
            return len(self.lines)

    def subscriptions(self, client: str, since: int) -> list[tuple[float, str]]:
        """The ``(time, filter)`` subscriptions ``client`` made after line ``since``."""
        with self._lock:
            lines = self.lines[since:]
        found = []
        for stamp, line in lines:
            parts = line.split(" ")
            # mosquitto 2: "<epoch>: <client id> <qos> <filter>"
            if len(parts) == 4 and parts[1] == client and parts[2].isdigit():
                found.append((stamp, parts[3]))
        return found

    def connected_at(self, client: str, since: int) -> float | None:
        """When the broker logged ``client``'s connection after line ``since``."""
        with self._lock:
            lines = self.lines[since:]
        pattern = re.compile(rf"New client connected from .* as {re.escape(client)} ")
        return next((stamp for stamp, line in lines if pattern.search(line)), None)

    def wait_subscribed(self, client: str, since: int, count: int, timeout: float) -> float:
        """When ``client``'s ``count``-th subscription after line ``since`` was logged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.subscriptions(client, since)
            if len(found) >= count:
                return found[count - 1][0]
            time.sleep(0.005)
        raise SystemExit(f"{client} made {len(self.subscriptions(client, since))} of "
                         f"{count} subscriptions in {timeout:.0f} s")  # fmt: skip


def daemon_config(folder: Path, port: int, sensors: int) -> Path:
    """Every sensor declared; the console publisher only; reconnecting at once."""
    parts = [
        f'[gateway]\nname = "startbench"\nstate_dir = "{folder / "state"}"\n',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nprotocol = 5\nclient_id = "{DAEMON_ID}"\n'
        'reconnect_min = "1s"\nreconnect_max = "1s"\n',
        f"[state]\nmax_sensors = {sensors + 10}\n",
        '[[publishers]]\nid = "console"\ntype = "console"\n',
    ]
    return write_config(folder, parts, sensors)


PAHO_CLIENT = """
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, client_id, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
filters = open(path, encoding="utf-8").read().split()
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
client.reconnect_delay_set(1, 1)
client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
client.connect("127.0.0.1", port)
client.loop_forever(retry_first_connection=True)
"""


def start_paho(port: int, filters: Path) -> subprocess.Popen[bytes]:
    """A bare paho client subscribing to ``filters`` on every (re)connection."""
    return subprocess.Popen([sys.executable, "-c", PAHO_CLIENT, str(port), PAHO_ID,
                             str(filters)], stdout=subprocess.DEVNULL)  # fmt: skip


def start_daemon(config: Path, notify: socket.socket) -> subprocess.Popen[bytes]:
    """``things-gateway run`` with ``NOTIFY_SOCKET`` pointing at ``notify``."""
    env = dict(os.environ, NOTIFY_SOCKET=notify.getsockname())
    log = (config.parent / "daemon.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log, env=env)  # fmt: skip


def wait_ready(notify: socket.socket, timeout: float) -> float:
    """When ``READY=1`` arrived."""
    notify.settimeout(timeout)
    while True:
        data = notify.recv(4096)
        if b"READY=1" in data.split(b"\n"):
            return time.perf_counter()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summary(values: list[float]) -> str:
    """Median and range, in seconds."""
    v = sorted(values)
    return f"{statistics.median(v):6.3f} s ({v[0]:.3f}-{v[-1]:.3f})"


def case(sensors: int, runs: int) -> dict[str, list[float]]:
    """``runs`` starts and broker restarts with ``sensors`` declared sensors."""
    times: dict[str, list[float]] = {k: [] for k in
                                     ("daemon start", "daemon ready", "paho start",
                                      "daemon resubscribe", "paho resubscribe")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Broker(folder, find_free_port())
        broker.start()
        config = daemon_config(folder, broker.port, sensors)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(folder / "notify.sock"))
        filters_path = folder / "filters.txt"
        count = 0
        try:
            for run in range(runs):
                since = broker.mark()
                began = time.perf_counter()
                daemon = start_daemon(config, notify)
                ready = wait_ready(notify, 300)
                if not count:  # the first start tells what the daemon subscribes to
                    time.sleep(1.0)
                    subs = broker.subscriptions(DAEMON_ID, since)
                    count = len(subs)
                    filters_path.write_text("\n".join(f for _, f in subs), encoding="utf-8")
                last = broker.wait_subscribed(DAEMON_ID, since, count, 300)
                times["daemon start"].append(last - began)
                times["daemon ready"].append(ready - began)

                since = broker.mark()
                began = time.perf_counter()
                paho = start_paho(broker.port, filters_path)
                times["paho start"].append(broker.wait_subscribed(PAHO_ID, since, count, 300)
                                           - began)  # fmt: skip

                broker.stop()
                since = broker.mark()
                broker.start()
                for client, key in ((DAEMON_ID, "daemon"), (PAHO_ID, "paho")):
                    last = broker.wait_subscribed(client, since, count, 300)
                    connected = broker.connected_at(client, since)
                    assert connected is not None
                    times[f"{key} resubscribe"].append(last - connected)
                stop(daemon)
                stop(paho)
                print(f"  {sensors} sensors, run {run + 1}/{runs} done", file=sys.stderr)
        finally:
            broker.stop()
            notify.close()
    print(f"{sensors:>6} sensors ({count} filters) | start: daemon {summary(times['daemon start'])}"
          f"  paho {summary(times['paho start'])}  daemon READY=1 "
          f"{summary(times['daemon ready'])}")  # fmt: skip
    print(
        f"{sensors:>6} sensors ({count} filters) | resubscribe: daemon "
        f"{summary(times['daemon resubscribe'])}  paho {summary(times['paho resubscribe'])}"
    )
    return times


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run each case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, nargs="+", default=[100, 1_000, 10_000, 50_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 sensors, 3 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.sensors, args.runs = [1_000, 10_000], 3
    print("Start-up (exec to the broker's last SUBSCRIBE logged, and to READY=1) and "
          "resubscription after a broker restart (CONNECT to last SUBSCRIBE) of "
          "`things-gateway run` with N declared sensors, beside a bare paho client "
          "subscribing to the same filters (MQTT 5, QoS 1); median (range) of "
          f"{args.runs} runs", flush=True)  # fmt: skip
    worst = 0.0
    for sensors in args.sensors:
        times = case(sensors, args.runs)
        if sensors == 10_000:
            worst = max(statistics.median(times["daemon start"]),
                        statistics.median(times["daemon resubscribe"]))  # fmt: skip
    if worst:
        verdict = "meets" if worst <= 2.0 else "misses"
        print(f"10,000 sensors: the daemon {verdict} the 2 s target (worst median {worst:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
