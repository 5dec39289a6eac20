"""``things-gateway run``: the daemon around a :class:`~gateway.runtime.app.Gateway`.

The main thread owns signals and systemd: SIGTERM/SIGINT stop the gateway in
order and exit 0; SIGHUP re-reads the config and restarts the gateway in-process
on the new one, or keeps the old one running (errors logged) when the new file
is invalid; SIGUSR1 (sent by ``outbox --retry``) makes every delivery worker look at
the outbox now instead of sleeping out its backoff.  Once a second it does what
is due: ``READY=1`` when the broker is connected and subscribed, ``WATCHDOG=1``
only while no thread is hung, ``STATUS=``, the health row, Home Assistant state,
media retention and a free-space check.  A PID file in the state dir lets
``things-gateway reload``/``status``/``outbox --retry`` find it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from gateway.config import ConfigError, GatewayConfig
from gateway.rules.scheduler import Plan
from gateway.runtime.app import Gateway
from gateway.runtime.hass import discovery_messages, health_topic, state_payload
from gateway.runtime.health import HealthStore, RateMeter, free_bytes, health_body, status_line
from gateway.runtime.loading import load_config
from gateway.runtime.memory import trim_malloc
from gateway.runtime.paths import database_path, pid_file
from gateway.runtime.sdnotify import Notifier, watchdog_interval
from gateway.support.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from gateway.runtime.web import WebServer

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0
"""Without a broker after this long, READY=1 is sent anyway (systemd would kill us)."""
LOW_DISK_BYTES = 5 * 1024 * 1024
TRIM_EVERY = 60.0
"""Seconds between returns of free heap memory to the system (see runtime/memory.py)."""


class Periodic:
    """Calls ``action`` at most every ``seconds`` (monotonic), starting at once."""

    def __init__(self, seconds: float, action: Callable[[], None]) -> None:
        self.seconds = seconds
        self.action = action
        self._due = 0.0

    def run_if_due(self, now: float) -> None:
        """Run the action when due."""
        if now >= self._due:
            self._due = now + self.seconds
            self.action()


def build_gateway(config: GatewayConfig) -> Gateway:
    """The daemon's gateway: it also keeps its Home Assistant discovery configs retained."""
    retained = discovery_messages(config) if config.homeassistant.enabled else []
    return Gateway(config, retained=retained)


class Daemon:
    """Runs one gateway at a time until asked to stop."""

    def __init__(
        self,
        config_path: Path,
        config: GatewayConfig,
        *,
        notifier: Notifier | None = None,
        factory: Callable[[GatewayConfig], Gateway] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = notifier or Notifier()
        self._factory = factory or build_gateway
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._deliver = threading.Event()
        self._wake = threading.Event()
        self._rate_log = RateLimitedLog(log, interval=300)
        self.gateway: Gateway | None = None
        self._web: WebServer | None = None

    # -- signals ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop; SIGHUP reloads; SIGUSR1 delivers now.  Handlers only set flags."""
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.request_reload()

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.request_delivery()

    def request_delivery(self) -> None:
        """Wake every delivery worker (``outbox --retry``; thread- and signal-safe)."""
        self._deliver.set()
        self._wake.set()

    def request_stop(self) -> None:
        """Ask the main loop to stop (thread- and signal-safe)."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Ask the main loop to re-read the config (thread- and signal-safe)."""
        self._reload.set()
        self._wake.set()

    # -- main loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit code (0)."""
        self._start(self.config)
        try:
            while not self._stop.is_set():
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                self._session()
        finally:
            self.notifier.stopping()
            self.notifier.status("stopping: finishing deliveries")
            self._stop_gateway()
            self.notifier.close()
        return 0

    def _start(self, config: GatewayConfig, plan: Plan | None = None) -> None:
        self.config = config
        self.gateway = self._factory(config)
        if plan:
            kept = self.gateway.scheduler.resume(plan)
            if kept:
                log.info("reload: %s keep their next run time", ", ".join(kept))
        self.gateway.start()
        self._write_pid_file()
        if config.web.enabled:
            # imported only when asked for: no HTTP server in memory otherwise
            from gateway.runtime.web import WebServer

            try:
                self._web = WebServer(config, gateway=self.gateway)
            except OSError as exc:  # the page is extra: posting goes on without it
                web = config.web
                log.error("[web]: cannot listen on %s:%d: %s", web.bind, web.port, exc)
            else:
                self._web.start_thread()
                log.info("serving the thing's page at %s", self._web.url)

    def _stop_gateway(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None
        if self.gateway is not None:
            self.gateway.stop()
            pid_file(self.gateway.config).unlink(missing_ok=True)
            self.gateway = None
            # The old gateway is a web of cycles (threads, callbacks): free it and the C
            # memory it holds (HTTP clients, SQLite caches) now, not at the collector's
            # next full pass, and give the pages back before the new one allocates.
            gc.collect()
            trim_malloc()

    def reload(self) -> bool:
        """Re-read the config; restart on it if valid, else keep the old one. True if applied."""
        log.info("reloading %s", self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("reload: %s", line)
            log.error("reload: config invalid; still running on the previous config")
            self.notifier.status("reload failed: config invalid, running on the previous one")
            return False
        except Exception:  # a bug in a check must not end a daemon that is running fine
            log.exception("reload: could not check the config; still running on the previous one")
            self.notifier.status("reload failed: config check failed, running on the previous one")
            return False
        self.notifier.reloading()
        old = self.config
        plan = self.gateway.scheduler.plan() if self.gateway is not None else None
        self._stop_gateway()
        try:
            self._start(new, plan)
        except Exception:
            log.exception("reload: the new config failed to start; going back to the old one")
            self._stop_gateway()
            self._start(old, plan)
            return False
        log.info("reload: running on the new config")
        return True

    def _write_pid_file(self) -> None:
        path = pid_file(self.config)
        try:
            path.write_text(f"{os.getpid()}\n", encoding="ascii")
        except OSError as exc:
            log.warning("cannot write PID file %s: %s", path, exc)

    def _session(self) -> None:
        """Serve the current gateway until a stop or reload request."""
        gateway = self.gateway
        assert gateway is not None
        session = _Session(gateway, self.notifier, self._rate_log)
        try:
            while not (self._stop.is_set() or self._reload.is_set()):
                if self._deliver.is_set():
                    self._deliver.clear()
                    gateway.wake_deliveries()
                session.tick()
                # until READY=1 is out, look often: systemd (and `After=` units) wait for it
                self._wake.wait(1.0 if session.ready_sent else 0.02)
                self._wake.clear()
        finally:
            session.close()


class _Session:
    """The periodic duties for one running gateway."""

    def __init__(self, gateway: Gateway, notifier: Notifier, rate_log: RateLimitedLog) -> None:
        self.gateway = gateway
        self.notifier = notifier
        self.rate_log = rate_log
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.ready_sent = False
        self.was_connected = False
        self.low_disk = False
        self.meter = RateMeter()
        self.health = HealthStore(database_path(gateway.config))
        self._health_seen: tuple[bool, int, int] | None = None
        self._health_stale: dict[str, str | None] = {}
        """Stale sensors at the last health write → their last reading time then."""
        config = gateway.config
        stall = config.health.stall_after.total_seconds()
        watchdog = watchdog_interval()
        self.tasks = [
            Periodic(max(1.0, min(10.0, stall / 4)), gateway.ingest.ping),
            Periodic(15.0, self.update_status),
            Periodic(config.health.disk_check.total_seconds(), self.check_storage),
            Periodic(config.health.interval.total_seconds(), self.write_health),
            # `status` must be right from the first seconds, not an interval later
            Periodic(1.0, self.write_health_if_changed),
            Periodic(TRIM_EVERY, self.release_memory),
        ]
        if watchdog is not None:
            self.tasks.insert(0, Periodic(watchdog, lambda: self.feed_watchdog(stall)))
        if config.homeassistant.enabled:
            self.tasks.append(
                Periodic(config.homeassistant.interval.total_seconds(), self.publish_hass_state)
            )

    def tick(self) -> None:
        """Do whatever is due now."""
        now = time.monotonic()
        self.check_ready(now)
        for task in self.tasks:
            try:
                task.run_if_due(now)
            except Exception as exc:  # a full disk or a locked DB must not end the daemon
                self.rate_log.error(
                    f"task:{task.action.__name__}", "%s failed: %s", task.action.__name__, exc
                )

    def check_ready(self, now: float) -> None:
        """READY=1 once subscribed; (re)publish discovery on every (re)connect."""
        ingest = self.gateway.ingest
        connected = ingest.ready.is_set()
        if connected and not self.was_connected and self.gateway.config.homeassistant.enabled:
            for topic, payload in discovery_messages(self.gateway.config):
                ingest.publish(topic, payload, qos=1, retain=True)
            self.publish_hass_state()
        self.was_connected = connected
        if self.ready_sent:
            return
        if connected or now - self.started > READY_TIMEOUT:
            if not connected:
                log.warning("MQTT broker not reachable yet; running anyway, retrying")
            self.update_status()
            self.notifier.ready()
            self.ready_sent = True

    def feed_watchdog(self, stall: float) -> None:
        """Ping the watchdog only while every thread is alive and not stuck."""
        problems = self.gateway.hung_components(stall)
        if problems:
            self.rate_log.error("watchdog", "not feeding the watchdog: %s", "; ".join(problems))
            return
        self.notifier.watchdog()

    def update_status(self) -> None:
        """Send the STATUS= line."""
        rate = self.meter.update(self.gateway.ingest.stats.readings)
        summary = self.health.summary()
        line = status_line(rate, summary, self.gateway.ingest.connected.is_set())
        self.notifier.status(("LOW DISK SPACE; " if self.low_disk else "") + line)

    def publish_hass_state(self) -> None:
        """Publish the Home Assistant health state."""
        rate = self.meter.update(self.gateway.ingest.stats.readings)
        inbox = getattr(self.gateway, "inbox", None)
        mentions = inbox.counts(time.time() - 86400) if inbox is not None else None
        payload = state_payload(rate, self.health.summary(), mentions)
        self.gateway.ingest.publish(health_topic(self.gateway.config), payload, retain=True)

    def check_storage(self) -> None:
        """Warn clearly when the disk is nearly full, and say when space is back.

        The media budget itself is kept by the gateway's retention job ([media]).
        """
        free = free_bytes(self.gateway.state_dir)
        was_low, self.low_disk = self.low_disk, free < LOW_DISK_BYTES
        if was_low and not self.low_disk:
            log.info("disk space is back: %d bytes free under %s", free, self.gateway.state_dir)
        if self.low_disk:
            self.rate_log.error(
                "low-disk",
                "disk nearly full: %d bytes free under %s; new posts and frames cannot be"
                " stored until space is freed (readings are still taken)",
                free,
                self.gateway.state_dir,
            )

    def write_health(self) -> None:
        """Refresh the health row when something in it changed."""
        body = health_body(self.gateway, started_at=self.started_at, low_disk=self.low_disk)
        self.health.maybe_write(body)
        self._health_seen = self._health_signals()
        self._health_stale = {
            sid: item["last_at"] for sid, item in body["sensors"].items() if item["stale"]
        }

    def write_health_if_changed(self) -> None:
        """Write the health row at once when the broker connects or drops, a rule posts
        or fails, the session is taken over, or a stale sensor gets a reading.

        Each second costs a look at the stale sensors only; the full row is built only
        then.  A sensor going stale is a matter of time, left to the ``interval`` check.
        """
        if self._health_signals() != self._health_seen or self._stale_sensor_read():
            self.write_health()

    def _health_signals(self) -> tuple[bool, int, int]:
        outcomes = sum(s.failed + s.posted for s in self.gateway.runner.stats.values())
        ingest = self.gateway.ingest
        return ingest.connected.is_set(), outcomes, ingest.takeover.takeovers

    def _stale_sensor_read(self) -> bool:
        state = self.gateway.state
        for sensor, last_at in self._health_stale.items():
            snap = state.get(sensor)
            if snap is not None and snap.at.isoformat(timespec="seconds") != last_at:
                return True
        return False

    def release_memory(self) -> None:
        """Give the heap memory posts and reloads freed back to the system."""
        trim_malloc()

    def close(self) -> None:
        """Close the health connection."""
        self.health.close()
