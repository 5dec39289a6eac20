"""Durability on an SD card: SIGKILLs at random moments, the media budget, a full disk.

``THINGS_GATEWAY_KILLS`` sets how many SIGKILLs the kill test deals (default 10, about
40 s; the issue's proof is 50: ``THINGS_GATEWAY_KILLS=50 pytest tests/test_durability.py``).
"""

from __future__ import annotations

import io
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

from gateway.demo.broker import Broker
from gateway.publishers.file import read_archive
from tests.gwutil import (
    StderrLines,
    base_config,
    event_rules,
    fill,
    publish,
    start_gateway,
    tmpfs,
    wait_until,
)

KILLS = int(os.environ.get("THINGS_GATEWAY_KILLS", "10"))
SENSORS = 20


class Firehose:
    """Publishes readings for SENSORS sensors as fast as the broker takes them (QoS 0)."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self._stop = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for i in range(SENSORS):
                self._client.publish(f"{self.topic}/s{i}", f"{20 + (n % 100) / 10:.1f}")
            n += 1
            self.sent += SENSORS
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()


def kill_config(broker: Broker, state: Path, topic: str) -> str:
    sensors = "".join(
        f'\n[[sensors]]\nid = "s{i}"\ntopic = "{topic}/s{i}"\nunit = "°C"\n' for i in range(SENSORS)
    )
    rules = "".join(
        f'\n[[rules]]\nid = "r{i}"\nevery = "1s"\n'
        f'text = "Rule {i}: {{{{ s{i} }}}} and {{{{ s{i + 1} }}}}"\n'
        'publish_to = ["archive", "backup"]\n'
        for i in range(8)
    )
    publishers = """
[[publishers]]
id = "archive"
type = "file"
path = "posts"

[[publishers]]
id = "backup"
type = "file"
path = "backup"
"""
    return base_config(broker, state) + sensors + rules + publishers


def pid_of(state: Path) -> int | None:
    """The pid in the gateway's PID file (written once it runs), if any."""
    try:
        return int((state / "things-gateway.pid").read_text())
    except (OSError, ValueError):
        return None


def db_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def deal_sigkills(config: Path, state: Path, kills: int, rng: random.Random) -> None:
    """Start the gateway and SIGKILL it ``kills`` times: three kills in four while it
    runs (0-2.5 s after its PID file appears), one during start-up."""
    for n in range(kills):
        gateway = start_gateway(config)
        if n % 4 != 3:
            wait_until(lambda pid=gateway.pid: pid_of(state) == pid, timeout=30)
        time.sleep(rng.uniform(0.0, 2.5))
        gateway.send_signal(signal.SIGKILL)
        gateway.communicate(timeout=10)
        assert gateway.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkills_during_heavy_ingest_and_posting_lose_nothing(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(kill_config(broker, state, mqtt_topic), encoding="utf-8")
    db = state / "gateway.db"
    rng = random.Random(int(os.environ.get("THINGS_GATEWAY_KILL_SEED", "7")))
    firehose = Firehose(broker, mqtt_topic)
    try:
        deal_sigkills(config, state, KILLS, rng)  # at random moments of ingest and posting
        killed_posts = db_rows(db, "SELECT id FROM posts")
        assert killed_posts, "no post was made between the kills"
        last_killed = max(str(row[0]) for row in killed_posts)
        gateway = start_gateway(config)
        try:
            wait_until(lambda: pid_of(state) == gateway.pid, timeout=30)
            wait_until(
                lambda: (
                    not db_rows(
                        db,
                        "SELECT 1 FROM deliveries WHERE status != 'sent'"
                        f" AND post_id <= '{last_killed}' LIMIT 1",
                    )
                ),
                timeout=60,
            )
        finally:
            gateway.send_signal(signal.SIGTERM)
            _out, err = gateway.communicate(timeout=30)
        assert gateway.returncode == 0, err
    finally:
        firehose.stop()

    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    posts = {str(r[0]) for r in db_rows(db, "SELECT id FROM posts")}
    deliveries = db_rows(db, "SELECT post_id, publisher, status FROM deliveries")
    per_post: dict[str, set[str]] = {}
    for post_id, publisher, _status in deliveries:
        per_post.setdefault(str(post_id), set()).add(str(publisher))
    assert all(per_post.get(p) == {"archive", "backup"} for p in posts)  # none half-written
    for folder, publisher in (("posts", "archive"), ("backup", "backup")):
        archived = [r["id"] for r in read_archive(state / folder / "posts.jsonl")]
        assert len(archived) == len(set(archived)), f"{folder}: a post archived twice"
        assert set(archived) <= posts, f"{folder}: an archived post is not in the log"
        sent = {str(p) for p, pub, s in deliveries if pub == publisher and s == "sent"}
        assert sent <= set(archived), f"{folder}: a delivery marked sent is not archived"
    old = [d for d in deliveries if str(d[0]) <= last_killed]
    assert old
    assert all(status == "sent" for _p, _pub, status in old)
    print(f"\n{KILLS} SIGKILLs: {len(posts)} posts, {len(deliveries)} deliveries, integrity ok")


def noisy_jpeg(seed: int, size: tuple[int, int] = (420, 320)) -> bytes:
    """A JPEG that does not compress well (about 90 KB)."""
    image = Image.effect_noise(size, 60 + seed % 7).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_media_stays_within_budget_with_a_camera_every_second(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    budget = 1024 * 1024
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, state)
        + f"""
[media]
max_bytes = {budget}
retention_interval = "1s"

[[cameras]]
id = "cam"
topic = "{mqtt_topic}/cam"
""",
        encoding="utf-8",
    )
    frames = [noisy_jpeg(i) for i in range(4)]
    frame_size = max(len(f) for f in frames)
    assert 10 * frame_size < budget  # 10 s of frames are always kept (retention's grace)
    gateway = start_gateway(config)
    sizes = []
    try:
        wait_until(lambda: (state / "gateway.db").exists())
        for n in range(22):  # a frame every second, well past the budget
            publish(broker, [(f"{mqtt_topic}/cam", frames[n % 4])])
            time.sleep(1.0)
            sizes.append(folder_bytes(state / "media" / "frames"))
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert 22 * frame_size > 1.5 * budget  # the camera did send more than the budget
    # Retention runs every second: between passes at most one new frame is over budget.
    assert max(sizes) <= budget + frame_size, sizes
    assert "retention: deleted" in err


@pytest.mark.slow
def test_full_disk_gives_clear_errors_keeps_ingesting_and_recovers(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "state", "size=16m") as state:
        config = tmp_path / "gateway.toml"
        config.write_text(
            base_config(broker, state)
            + f"""
[health]
disk_check = "1s"

[[sensors]]
id = "temp"
topic = "{mqtt_topic}/temp"
unit = "°C"

[[rules]]
id = "r"
every = "1s"
text = "Temp {{{{ temp }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
""",
            encoding="utf-8",
        )
        gateway = start_gateway(config)
        log = StderrLines(gateway)
        try:
            publish_until_posted(broker, mqtt_topic, "20.5", state)
            filler = fill(state)
            # While the disk is full: a new reading is taken (only ever published now).
            publish(broker, [(f"{mqtt_topic}/temp", "33.3")])
            wait_until(lambda: log.has("disk nearly full"), timeout=30)
            time.sleep(2)  # a few rule firings on the full disk
            assert gateway.poll() is None, "the gateway died on a full disk"
            assert "33.3" not in archive_text(state)
            filler.unlink()
            (state / "filler2").unlink(missing_ok=True)
            wait_until(lambda: "Temp 33.3 °C" in archive_text(state), timeout=30)
            wait_until(lambda: log.has("disk space is back"), timeout=30)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
            err = log.text()
        assert gateway.returncode == 0, err
        print("\n".join(line for line in err.splitlines() if "full" in line or "space" in line))
        db = state / "gateway.db"
        assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]


def archive_text(state: Path) -> str:
    path = state / "posts" / "posts.jsonl"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def publish_until_posted(broker: Broker, topic: str, value: str, state: Path) -> None:
    """Publish ``value`` until a post carries it (the gateway subscribes asynchronously)."""

    def posted() -> bool:
        publish(broker, [(f"{topic}/temp", value)])
        return value in archive_text(state)

    wait_until(posted, timeout=30, interval=0.5)


class SlowWebhook:
    """A local webhook receiver that holds every request ``delay`` seconds (then 200)."""

    def __init__(self, delay: float) -> None:
        import http.server

        self.delay = delay
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests += 1
                time.sleep(outer.delay)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def persistent_config(broker: Broker, state: Path, name: str) -> str:
    return base_config(broker, state, name=name).replace(
        "persistent_session = false", f'persistent_session = true\nclient_id = "{name}-gw"'
    )


def counted(db: Path, sensor: str) -> int:
    """Readings counted in the per-minute history (written at every clean stop)."""
    rows = db_rows(
        db, f"SELECT COALESCE(SUM(count), 0) FROM readings_minute WHERE sensor='{sensor}'"
    )
    return int(rows[0][0])  # type: ignore[call-overload]


@pytest.mark.slow
def test_readings_arriving_while_the_gateway_stops_are_kept_for_the_next_start(
    broker_factory: Any, mqtt_topic: str, tmp_path: Path
) -> None:
    """Between pause() and the end of ingest (up to shutdown_timeout, here a slow webhook
    delivery) QoS 1 readings are not acknowledged: the broker keeps them for the next run."""
    broker = broker_factory(prefer="mosquitto")
    hook = SlowWebhook(delay=6.0)
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        persistent_config(broker, state, "pausegw")
        + f"""
[health]
shutdown_timeout = "10s"

[[sensors]]
id = "temp"
topic = "{mqtt_topic}/temp"

[[rules]]
id = "r"
every = "1s"
text = "tick {{{{ now }}}}"
publish_to = ["hook"]

[[publishers]]
id = "hook"
type = "webhook"
url = "{hook.url}"
""",
        encoding="utf-8",
    )
    try:
        gateway = start_gateway(config)
        log = StderrLines(gateway)
        wait_until(lambda: hook.requests >= 1, timeout=30)  # a delivery is now held 6 s
        gateway.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the gateway has paused ingest and waits for the delivery
        publish(broker, [(f"{mqtt_topic}/temp", f"{n}.5") for n in range(20)])
        gateway.wait(timeout=30)
        assert gateway.returncode == 0, log.text()
        first = counted(state / "gateway.db", "temp")
        hook.delay = 0.0
        gateway = start_gateway(config)
        log = StderrLines(gateway)
        wait_until(lambda: log.has("session present: True"), timeout=30)
        time.sleep(2)
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
        assert gateway.returncode == 0, log.text()
    finally:
        hook.close()
    total = counted(state / "gateway.db", "temp")
    assert first == 0  # none was taken while stopping...
    assert total == 20  # ...and the broker kept every one for the next start


STORM_SIGNALS = int(os.environ.get("THINGS_GATEWAY_STORM_SIGNALS", "20"))
STORM_EVENTS = 1000


def storm_config(broker: Broker, state: Path, topic: str) -> str:
    """Events that render the sensor (an ``n/a`` after a restart shows), and a report
    rule that renders its 1-hour window."""
    rules = event_rules(topic, sensor=True).replace(
        'text = "Event {{ event.n }}"', 'text = "Event {{ event.n }} {{ temp }}"'
    )
    rules = rules.replace(
        'topic = "' + topic + '/temp"\n', f'topic = "{topic}/temp"\nprecision = 4\n'
    )
    report = f"""
[[rules]]
id = "report"
on_message = {{ topic = "{topic}/report" }}
text = "W {{{{ temp.min_1h }}}} {{{{ temp.max_1h }}}} {{{{ temp.mean_1h }}}}"
publish_to = ["archive"]
"""
    return persistent_config(broker, state, "stormgw") + rules + report


def storm_value(i: int) -> float:
    return 20 + (i % 100) / 10


def readings_and_events(topic: str, first: int, n: int, events: bool) -> list[tuple[str, str]]:
    messages = []
    for i in range(first, first + n):
        messages.append((f"{topic}/temp", f"{storm_value(i):.1f}"))
        if events:
            messages.append((f"{topic}/events", f'{{"n": {i}}}'))
    return messages


def run_then_signal(config: Path, state: Path, sig: signal.Signals, after: float) -> str:
    gateway = start_gateway(config)
    log = StderrLines(gateway)
    wait_until(lambda: pid_of(state) == gateway.pid, timeout=30)
    time.sleep(after)
    gateway.send_signal(sig)
    gateway.wait(timeout=60)
    expected = -signal.SIGKILL if sig == signal.SIGKILL else 0
    assert gateway.returncode == expected, log.text()
    return log.text()


def history_totals(db: Path, sensor: str) -> tuple[int, float, float, float]:
    """``(count, sum, min, max)`` of a sensor over the whole per-minute history."""
    rows = db_rows(
        db,
        "SELECT SUM(count), SUM(sum), MIN(min), MAX(max) FROM readings_minute"
        f" WHERE sensor='{sensor}'",
    )
    count, total, low, high = rows[0]
    return int(count or 0), float(total or 0), float(low or 0), float(high or 0)  # type: ignore[arg-type]


@pytest.mark.slow
def test_restart_storm_fires_every_queued_event_once_and_counts_every_reading_once(
    broker_factory: Any, mqtt_topic: str, tmp_path: Path
) -> None:
    """1,000 QoS 1 events and 1,000 readings queued while the gateway is down, then
    SIGKILLs and SIGTERMs (``THINGS_GATEWAY_STORM_SIGNALS``, default 20) dealt while it
    drains them: every event makes exactly one post, none renders ``n/a``, and every
    reading is counted exactly once (a SIGKILLed run's readings come back from its
    readings journal).  Then 1,000 more readings drained through SIGKILLs too, and the
    1-hour window the daemon renders equals a brute force over all 2,000."""
    broker = broker_factory(prefer="mosquitto", extra_config=["max_queued_messages 0"])
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(storm_config(broker, state, mqtt_topic), encoding="utf-8")
    db = state / "gateway.db"
    run_then_signal(config, state, signal.SIGTERM, 1.0)  # the session and its subscriptions
    publish(broker, readings_and_events(mqtt_topic, 0, STORM_EVENTS, events=True))
    rng = random.Random(int(os.environ.get("THINGS_GATEWAY_KILL_SEED", "7")))
    drained: list[int] = []
    for n in range(STORM_SIGNALS):
        sig = signal.SIGTERM if n % 4 == 3 else signal.SIGKILL  # three kills, one clean stop
        run_then_signal(config, state, sig, rng.uniform(0.9, 1.4))  # while firing
        drained.append(len(db_rows(db, "SELECT id FROM posts")))
    # The last run drains the rest.
    gateway = start_gateway(config)
    log = StderrLines(gateway)
    try:
        wait_until(
            lambda: len(db_rows(db, "SELECT id FROM posts WHERE rule='ev'")) >= STORM_EVENTS,
            timeout=240,
            interval=1,
        )
        wait_until(lambda: len(archive_posts_of(state)) >= STORM_EVENTS, timeout=120)
        time.sleep(1)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    assert gateway.returncode == 0, log.text()
    texts = [str(r[0]) for r in db_rows(db, "SELECT text FROM posts WHERE rule='ev'")]
    assert sorted(t.split(" ")[1] for t in texts) == sorted(str(i) for i in range(STORM_EVENTS))
    assert not [t for t in texts if "n/a" in t]  # every post after a restart knew temp
    archived = archive_posts_of(state)
    assert len(archived) == len({r["id"] for r in archived}) == STORM_EVENTS
    values = [storm_value(i) for i in range(STORM_EVENTS)]
    count, total, low, high = history_totals(db, "temp")
    assert count == STORM_EVENTS  # none lost to a SIGKILL, none counted twice
    assert (low, high) == (min(values), max(values))
    assert total == pytest.approx(sum(values))

    # Readings only, drained through SIGKILLs and clean restarts.
    publish(broker, readings_and_events(mqtt_topic, 0, STORM_EVENTS, events=False))
    for n in range(4):
        sig = signal.SIGKILL if n % 2 == 0 else signal.SIGTERM
        run_then_signal(config, state, sig, rng.uniform(0.0, 0.4))
    run_then_signal(config, state, signal.SIGKILL, 2.0)  # the rest taken, then killed
    # A last run renders the window rebuilt from the history and the journal.
    gateway = start_gateway(config)
    log = StderrLines(gateway)
    try:
        wait_until(lambda: log.has("session present: True"), timeout=30)
        wait_until(
            lambda: (
                publish(broker, [(f"{mqtt_topic}/report", "{}")])
                or any(p["text"].startswith("W ") for p in archive_posts_of(state))
            ),
            timeout=60,
            interval=2,
        )
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    assert gateway.returncode == 0, log.text()
    values *= 2
    count, total, low, high = history_totals(db, "temp")
    assert count == 2 * STORM_EVENTS
    assert total == pytest.approx(sum(values))
    report = next(p["text"] for p in archive_posts_of(state) if p["text"].startswith("W "))
    shown = [float(part) for part in report.split()[1:]]
    assert shown[:2] == [min(values), max(values)], report
    assert shown[2] == pytest.approx(sum(values) / len(values), abs=1e-4), report
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    print(f"\nstorm: {STORM_SIGNALS} signals; posts made after each: {drained}")


def archive_posts_of(state: Path) -> list[dict[str, Any]]:
    return list(read_archive(state / "posts" / "posts.jsonl"))
