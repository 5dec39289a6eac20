"""The daemon under a fake systemd: sd_notify, watchdog, signals, reload, status, journald."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.broker import Broker
from gateway.runtime.app import Gateway
from gateway.runtime.daemon import Daemon, _Session
from gateway.runtime.loading import load_config
from gateway.runtime.logs import make_formatter
from gateway.runtime.sdnotify import Notifier, watchdog_interval
from gateway.support.ratelog import RateLimitedLog
from tests.gwutil import archive_posts, base_config, cli, publish, start_gateway, wait_until


class NotifySocket:
    """What systemd listens on: an abstract AF_UNIX datagram socket collecting messages."""

    def __init__(self) -> None:
        self.address = f"@things-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        """Receive what is waiting; returns every message so far."""
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def seen(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        """Messages carrying ``key`` (with ``value`` when given)."""
        return [m for m in self.drain() if key in m and (value is None or m[key] == value)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def write_config(path: Path, broker: Broker, state: Path, topic: str, extra: str = "") -> Path:
    path.write_text(
        base_config(broker, state)
        + f"""
[health]
interval = "1s"
stall_after = "2s"
shutdown_timeout = "5s"

[[sensors]]
id = "temp"
topic = "{topic}/temp"
unit = "°C"
expire_after = "1h"

[[rules]]
id = "status"
every = "1s"
text = "Temp {{{{ temp }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""
        + extra,
        encoding="utf-8",
    )
    return path


def systemd_env(sock: NotifySocket, watchdog_usec: int = 1_000_000) -> dict[str, str]:
    env = os.environ.copy()
    env.update(NOTIFY_SOCKET=sock.address, WATCHDOG_USEC=str(watchdog_usec), JOURNAL_STREAM="8:1")
    env.pop("WATCHDOG_PID", None)
    return env


def test_notifier_sends_fields_and_is_a_no_op_without_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address)
    assert notifier.ready("up")
    assert notifier.watchdog()
    notifier.close()
    assert notify_socket.seen("READY", "1")[0]["STATUS"] == "up"
    assert notify_socket.seen("WATCHDOG", "1")
    assert Notifier("").send(ready=1) is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_journal_format_has_priority_prefix_and_no_timestamp() -> None:
    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("gateway.x", level, __file__, 1, msg, None, None)

    journal = make_formatter(journal=True)
    assert journal.format(record(logging.ERROR, "bad")) == "<3>gateway.x: bad"
    assert journal.format(record(logging.WARNING, "hm")) == "<4>gateway.x: hm"
    assert journal.format(record(logging.INFO, "a\nb")) == "<6>gateway.x: a\n<6>b"
    terminal = make_formatter(journal=False).format(record(logging.INFO, "hi"))
    assert terminal.endswith("INFO gateway.x: hi")
    assert terminal[:4].isdigit()  # starts with the year: a timestamp


def test_rate_limited_log_summarises_repeats(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), interval=60, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        assert limited.error("k", "disk full")
        assert not limited.error("k", "disk full")
        assert not limited.error("k", "disk full")
        clock[0] = 61
        assert limited.error("k", "disk full")
    assert [r.getMessage() for r in caplog.records] == [
        "disk full",
        "disk full (and 2 more like it since the last report)",
    ]
    assert caplog.records[0].levelno == logging.ERROR


def test_under_systemd_ready_status_watchdog_then_sigterm_exits_0(
    broker: Broker,
    mqtt_topic: str,
    tmp_path: Path,
    notify_socket: NotifySocket,
    mqtt_subscribe: Callable[..., Any],
) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "gw.toml", broker, state, mqtt_topic)
    gateway = start_gateway(config, env=systemd_env(notify_socket))
    try:
        wait_until(lambda: notify_socket.seen("READY", "1"), timeout=20)
        publish(broker, [(f"{mqtt_topic}/temp", "21.5")])
        wait_until(lambda: len(notify_socket.seen("WATCHDOG", "1")) >= 2, timeout=20)
        wait_until(lambda: any("21.5" in p["text"] for p in archive_posts(state)), timeout=20)
        statuses = [m["STATUS"] for m in notify_socket.seen("STATUS")]
        assert (state / "things-gateway.pid").read_text().strip() == str(gateway.pid)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert any("readings/s" in s and "outbox" in s and "last post" in s for s in statuses)
    assert notify_socket.seen("STOPPING", "1")
    assert not (state / "things-gateway.pid").exists()
    # journald-friendly: priority prefixes, no timestamps
    lines = [line for line in err.splitlines() if line]
    assert lines
    assert all(line[:3] in ("<3>", "<4>", "<6>", "<7>", "<2>") for line in lines), lines[:5]
    assert "<6>gateway.runtime.app: gateway stopped" in lines
    status = mqtt_subscribe("things-gateway/testgw/status")
    (msg,) = status.wait_for(lambda ms: len(ms) >= 1)
    assert msg.payload == b"offline"
    assert msg.retain


def test_watchdog_is_not_fed_while_a_delivery_hangs(
    broker: Broker, mqtt_topic: str, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = load_config(write_config(tmp_path / "gw.toml", broker, tmp_path / "s", mqtt_topic))
    gateway = Gateway(config)
    release = threading.Event()
    archive = gateway.publishers["archive"]
    real_publish = archive.publish

    def hanging_publish(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return real_publish(*args, **kwargs)

    archive.publish = hanging_publish  # type: ignore[method-assign]
    gateway.start()
    notifier = Notifier(notify_socket.address)
    session = _Session(gateway, notifier, RateLimitedLog(logging.getLogger("t")))
    try:
        wait_until(lambda: gateway.ingest.ready.is_set())
        session.feed_watchdog(2.0)
        assert len(notify_socket.seen("WATCHDOG")) == 1  # healthy: fed
        gateway.fire("status")
        # Nobody pings the broker here, so ingest may look silent too; look at delivery.
        problems = wait_until(
            lambda: [p for p in gateway.hung_components(1.0) if not p.startswith("ingest")],
            timeout=20,
        )
        assert len(problems) == 1
        assert problems[0].startswith("delivery archive: stuck for")
        session.feed_watchdog(1.0)
        assert len(notify_socket.seen("WATCHDOG")) == 1  # hung: not fed
        gateway.scheduler_heartbeat -= 1000
        assert any(p.startswith("scheduler: no heartbeat") for p in gateway.hung_components(1.0))
    finally:
        release.set()
        session.close()
        gateway.stop()
        notifier.close()


def test_shutdown_hooks_run_after_deliveries_before_offline_and_close(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path / "gw.toml", broker, tmp_path / "s", mqtt_topic))
    gateway = Gateway(config)
    seen: list[tuple[str, object]] = []

    def flush_history() -> None:
        seen.append(("connected", gateway.ingest.connected.is_set()))
        seen.append(("workers alive", any(w.is_alive() for w in gateway.workers.values())))
        seen.append(("db usable", gateway.outbox.counts() is not None))

    def broken() -> None:
        raise RuntimeError("boom")

    gateway.add_shutdown_hook("broken", broken)
    gateway.add_shutdown_hook("history", flush_history)
    gateway.start()
    wait_until(lambda: gateway.ingest.ready.is_set())
    gateway.stop()
    assert seen == [("connected", True), ("workers alive", False), ("db usable", True)]


def test_sighup_reload_keeps_old_config_when_invalid_then_applies_valid(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    path = write_config(tmp_path / "gw.toml", broker, state, mqtt_topic)
    good = path.read_text()
    gateway = start_gateway(path)
    try:
        wait_until(lambda: archive_posts(state), timeout=20)
        path.write_text(good.replace("[[rules]]", "[[rules]]\nbogus = 1"), encoding="utf-8")
        gateway.send_signal(signal.SIGHUP)
        count = len(archive_posts(state))
        wait_until(lambda: len(archive_posts(state)) > count + 1, timeout=20)  # still posting
        assert gateway.poll() is None
        path.write_text(good.replace('text = "Temp', 'text = "Reloaded'), encoding="utf-8")
        reload = cli("reload", "-c", str(path))
        assert reload.returncode == 0, reload.stderr
        assert f"pid {gateway.pid}" in reload.stdout
        wait_until(
            lambda: any(p["text"].startswith("Reloaded") for p in archive_posts(state)),
            timeout=20,
        )
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert "reload: rules[0].bogus: unknown key" in err
    assert "still running on the previous config" in err
    assert "reload: running on the new config" in err


def test_reload_without_daemon_fails_and_invalid_config_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n', encoding="utf-8")
    result = cli("reload", "-c", str(path))
    assert result.returncode == 1
    assert "no running gateway" in result.stderr
    path.write_text("[gateway]\nnope = 1\n", encoding="utf-8")
    assert cli("reload", "-c", str(path)).returncode == 78


def test_status_summarises_the_running_daemon(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    extra = f"""
[[sensors]]
id = "silent"
topic = "{mqtt_topic}/silent"
"""
    path = write_config(tmp_path / "gw.toml", broker, state, mqtt_topic, extra)
    gateway = start_gateway(path)
    try:

        def report() -> str | None:
            publish(broker, [(f"{mqtt_topic}/temp", "19")])  # until the gateway subscribed
            result = cli("status", "-c", str(path))
            ok = "connected" in result.stdout and "1 fresh, 1 stale" in result.stdout
            return result.stdout if ok and result.returncode == 0 else None

        text = wait_until(report, timeout=30, interval=0.5)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.communicate(timeout=30)
    assert f"gateway testgw: running (pid {gateway.pid})" in text
    assert f"broker {broker.host}:{broker.port}: connected" in text
    assert "stale: silent (last reading never)" in text
    assert "  status: " in text  # last post per rule
    assert "  archive: " in text
    stopped = cli("status", "-c", str(path))
    assert stopped.returncode == 3
    assert "not running" in stopped.stdout


def test_home_assistant_discovery_and_state(
    broker: Broker,
    mqtt_topic: str,
    tmp_path: Path,
    mqtt_subscribe: Callable[..., Any],
) -> None:
    state = tmp_path / "state"
    extra = f"""
[homeassistant]
enabled = true
discovery_prefix = "{mqtt_topic}/ha"
node_id = "poolgw"
interval = "1s"
"""
    path = write_config(tmp_path / "gw.toml", broker, state, mqtt_topic, extra)
    discovery = mqtt_subscribe(f"{mqtt_topic}/ha/#")
    health = mqtt_subscribe("things-gateway/testgw/health")
    daemon = Daemon(path, load_config(path))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        publish(broker, [(f"{mqtt_topic}/temp", "20")])
        configs = discovery.wait_for(lambda ms: len(ms) >= 6, timeout=20)
        states = health.wait_for(
            lambda ms: any(json.loads(m.payload)["last_post_at"] for m in ms), timeout=30
        )
    finally:
        daemon.request_stop()
        runner.join(30)
    by_topic = {m.topic: json.loads(m.payload) for m in configs}
    prefix = f"{mqtt_topic}/ha"
    assert set(by_topic) == {
        f"{prefix}/binary_sensor/poolgw/online/config",
        *(
            f"{prefix}/sensor/poolgw/{o}/config"
            for o in (
                "readings_per_s", "outbox_depth", "last_post_at", "last_post_url",
                "failed_deliveries",
            )
        ),
    }  # fmt: skip
    for topic, doc in by_topic.items():
        object_id = topic.split("/")[-2]
        assert doc["unique_id"] == f"poolgw_{object_id}"
        assert doc["availability_topic"] == "things-gateway/testgw/status"
        assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
        assert doc["device"]["identifiers"] == ["things_gateway_poolgw"]
        if object_id != "online":
            assert doc["state_topic"] == "things-gateway/testgw/health"
            assert doc["value_template"] == f"{{{{ value_json.{object_id} }}}}"
    online = by_topic[f"{prefix}/binary_sensor/poolgw/online/config"]
    assert online["state_topic"] == "things-gateway/testgw/status"
    assert online["device_class"] == "connectivity"
    assert by_topic[f"{prefix}/sensor/poolgw/last_post_at/config"]["device_class"] == "timestamp"
    late = mqtt_subscribe(f"{mqtt_topic}/ha/#").wait_for(lambda ms: len(ms) >= 6)
    assert {m.topic for m in late} == set(by_topic)
    assert all(m.retain for m in late)  # retained: Home Assistant finds them after a restart
    doc = json.loads(states[-1].payload)
    assert set(doc) == {
        "readings_per_s", "outbox_depth", "last_post_at", "last_post_url", "failed_deliveries"
    }  # fmt: skip
    assert isinstance(doc["readings_per_s"], float)
    assert doc["failed_deliveries"] == 0
    assert doc["last_post_at"].startswith(time.strftime("%Y"))


def test_status_is_right_from_the_first_seconds(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    """Default ``[health] interval`` (60 s): connection, freshness and a failing rule
    show within seconds; a disabled publisher says so."""
    state = tmp_path / "state"
    path = tmp_path / "gw.toml"
    path.write_text(
        base_config(broker, state)
        + f"""
[[sensors]]
id = "temp"
topic = "{mqtt_topic}/temp"
expire_after = "1h"

[[rules]]
id = "broken"
every = "1s"
text = "{{{{ temp / 0 }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"

[[publishers]]
id = "screen"
type = "console"
enabled = false
""",
        encoding="utf-8",
    )
    gateway = start_gateway(path)
    try:

        def report() -> str | None:
            publish(broker, [(f"{mqtt_topic}/temp", "19")])  # until the gateway subscribed
            result = cli("status", "-c", str(path))
            wanted = ("connected", "1 fresh, 0 stale", "broken: FAILING")
            return result.stdout if all(w in result.stdout for w in wanted) else None

        text = wait_until(report, timeout=15, interval=0.5)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.communicate(timeout=30)
    assert f"broker {broker.host}:{broker.port}: connected" in text
    assert "NOT connected" not in text
    (rule_line,) = [line for line in text.splitlines() if "broken: " in line]
    assert "template error: TypeError" in rule_line  # the error itself, not just "failed"
    assert "  screen: disabled" in text
    assert "  archive: 0 waiting" in text


def test_a_closed_pipe_ends_a_command_quietly(tmp_path: Path) -> None:
    """``things-gateway status | head -1``: no BrokenPipeError traceback."""
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n[[publishers]]\nid = "log"\ntype = "console"\n',
        encoding="utf-8",
    )
    for args in (["status"], ["history"], ["outbox"], ["check-config"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before anything is written
        try:
            result = subprocess.run(
                [sys.executable, "-m", "gateway", *args, "-c", str(path)],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=30,
            )
        finally:
            os.close(write_end)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "BrokenPipe" not in result.stderr, (args, result.stderr)
        assert result.returncode == 141, args  # as if killed by SIGPIPE, like head's peers


def test_reload_keeps_schedules_and_sensor_values(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    """A reload neither pushes back an unchanged ``every`` rule nor blanks the sensors."""
    state = tmp_path / "state"
    path = tmp_path / "gw.toml"
    rules = """
[[rules]]
id = "hourly"
every = "1h"
text = "Temp {{ temp }}"
publish_to = ["archive"]

[[rules]]
id = "changed"
every = "1h"
text = "Temp {{ temp }}"
publish_to = ["archive"]
"""
    publishers = '\n[[publishers]]\nid = "archive"\ntype = "file"\n'
    sensors = f'\n[[sensors]]\nid = "temp"\ntopic = "{mqtt_topic}/temp"\nexpire_after = "1h"\n'
    path.write_text(base_config(broker, state) + sensors + rules + publishers, encoding="utf-8")
    daemon = Daemon(path, load_config(path))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        first = wait_until(lambda: daemon.gateway)
        assert first.ingest.ready.wait(20)
        publish(broker, [(f"{mqtt_topic}/temp", "19.5")])
        reading = wait_until(lambda: first.state.get("temp"))
        before = first.scheduler.next_runs()
        time.sleep(1.5)  # a restarted `every` timer would now be 1.5 s later
        path.write_text(
            path.read_text().replace('id = "changed"\nevery = "1h"', 'id = "changed"\nevery = "2h"')
        )
        daemon.request_reload()
        second = wait_until(lambda: daemon.gateway is not first and daemon.gateway)
        after = wait_until(lambda: second.scheduler.next_runs())
        restored = second.state.get("temp")
    finally:
        daemon.request_stop()
        runner.join(30)
    assert after["hourly"] == before["hourly"]  # unchanged trigger: same next run
    assert after["changed"] - before["changed"] >= timedelta(minutes=59)  # new trigger
    assert restored is not None
    assert (restored.value, restored.at) == (reading.value, reading.at)
