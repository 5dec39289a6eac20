"""``things-gateway status``, ``reload`` and ``outbox --retry``: talk to the running daemon.

They find it through the PID file in the state dir; ``status`` then reads the
health row and the outbox from SQLite (read-only), so it works over SSH without
any socket or HTTP endpoint.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.runtime.health import HealthStore, OutboxSummary
from gateway.runtime.paths import database_path, pid_file


def running_pid(config: GatewayConfig) -> int | None:
    """The daemon's process id from its PID file, if that process is a live gateway."""
    try:
        pid = int(pid_file(config).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # A stale PID file may name a process that reused the number.
    return pid if b"gateway" in cmdline else None


def send_reload(config: GatewayConfig) -> tuple[bool, str]:
    """SIGHUP the running daemon; (done, message)."""
    pid = running_pid(config)
    if pid is None:
        return False, f"no running gateway found (no live PID in {pid_file(config)})"
    os.kill(pid, signal.SIGHUP)
    return True, f"asked gateway (pid {pid}) to reload its config"


def send_deliver_now(config: GatewayConfig) -> tuple[bool, str]:
    """SIGUSR1 the running daemon: its delivery workers look at the outbox again now
    (after ``outbox --retry``, rather than sleeping out their old backoff)."""
    pid = running_pid(config)
    if pid is None:
        return False, "the gateway is not running; it delivers when it starts"
    os.kill(pid, signal.SIGUSR1)
    return True, f"asked the running gateway (pid {pid}) to deliver now"


def _ago(iso: str | None, now: datetime) -> str:
    if not iso:
        return "never"
    seconds = int((now - datetime.fromisoformat(iso)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def status_report(config: GatewayConfig, now: datetime | None = None) -> list[str]:
    """The human summary, one line per item."""
    now = now or datetime.now(UTC)
    pid = running_pid(config)
    state = f"running (pid {pid})" if pid else "not running"
    lines = [f"gateway {config.gateway.name}: {state}"]
    db = database_path(config)
    if not db.exists():
        return [*lines, f"no database yet at {db}"]
    store = HealthStore(db, read_only=True)
    try:
        health, summary = store.read(), store.summary()
    finally:
        store.close()
    if health is None:
        lines.append("no health recorded yet")
    else:
        lines.extend(_health_lines(health, pid is not None, now))
    rules = health.get("rules") if health else None
    lines.extend(_rule_lines(config, summary, rules if isinstance(rules, dict) else {}, now))
    holds = health.get("publishers") if health and pid is not None else None
    lines.extend(_outbox_lines(config, summary, holds if isinstance(holds, dict) else {}))
    if config.conversations.enabled:
        from gateway.conversations.inbox import read_counts

        counts = read_counts(db, now.timestamp() - 86400)
        if counts is not None:
            lines.append(
                f"mentions (last 24 h): {counts['seen']} seen, {counts['answered']} answered,"
                f" {counts['skipped']} skipped"
            )
    return lines


def _health_lines(health: dict[str, object], running: bool, now: datetime) -> list[str]:
    mqtt = health.get("mqtt")
    lines = []
    if isinstance(mqtt, dict):
        state = "connected" if mqtt.get("connected") else "NOT connected"
        as_of = "" if running else " (when it last ran)"
        lines.append(f"broker {mqtt.get('host')}:{mqtt.get('port')}: {state}{as_of}")
        dropped = mqtt.get("broker_dropped")
        if isinstance(dropped, int) and dropped:
            lines.append(
                f"BROKER DROPPED {dropped} messages over its queue limits (all clients, since"
                " it started): readings may be lost; see config/mosquitto.conf"
            )
        takeovers = mqtt.get("takeovers")
        if isinstance(takeovers, int) and takeovers:
            last = _ago(str(mqtt.get("takeover_at")), now)
            lines.append(
                f"MQTT SESSION TAKEN OVER {takeovers} times (last {last}): another client"
                " uses the gateway's client id and receives its readings"
            )
    if health.get("low_disk"):
        lines.append("DISK NEARLY FULL: posts and frames cannot be stored")
    sensors = health.get("sensors")
    if isinstance(sensors, dict) and sensors:
        stale = sorted(k for k, v in sensors.items() if v.get("stale"))
        lines.append(f"sensors: {len(sensors) - len(stale)} fresh, {len(stale)} stale")
        for sensor in stale:
            last = _ago(sensors[sensor]["last_at"], now)
            lines.append(f"  stale: {sensor} (last reading {last})")
    lines.append(f"health recorded {_ago(str(health.get('written_at')), now)}")
    return lines


def _rule_lines(
    config: GatewayConfig,
    summary: OutboxSummary,
    failures: dict[str, dict[str, object]],
    now: datetime,
) -> list[str]:
    """Last post per rule; a rule whose posts fail says so, with its last error."""
    lines = ["last post per rule:"]
    for rule in config.rules:
        last = _ago(summary.last_post_per_rule.get(rule.id), now)
        failure = failures.get(rule.id)
        if not failure:
            lines.append(f"  {rule.id}: {last}")
        elif failure.get("failing"):
            since = _ago(str(failure.get("failing_since")), now)
            lines.append(
                f"  {rule.id}: FAILING since {since} ({failure.get('failed')} failures since"
                f" start; last post {last}): {failure.get('last_error')}"
            )
        else:
            error_at = _ago(str(failure.get("last_error_at")), now)
            lines.append(
                f"  {rule.id}: {last} ({failure.get('failed')} failures since start,"
                f" the last {error_at}: {failure.get('last_error')})"
            )
    return lines


def _outbox_lines(
    config: GatewayConfig, summary: OutboxSummary, holds: dict[str, object]
) -> list[str]:
    lines = [f"outbox: {summary.depth} waiting, {summary.dead} given up"]
    for publisher in config.publishers:
        counts = summary.per_publisher.get(publisher.id, {})
        waiting = sum(counts.get(s, 0) for s in ("pending", "sending", "failed"))
        detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing yet"
        if not publisher.enabled:
            # its deliveries wait for it to be enabled again
            left = f" ({waiting} waiting)" if waiting else ""
            lines.append(f"  {publisher.id}: disabled{left}")
            continue
        lines.append(f"  {publisher.id}: {waiting} waiting ({detail})")
        if publisher.id in holds:  # paused, or waiting for a rate limit or daily cap
            lines.append(f"    {holds[publisher.id]}")
    return lines
