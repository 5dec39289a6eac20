"""The running gateway: wires ingest, state, rules, outbox and delivery together.

Threads, not asyncio: paho's network thread, a frame writer, the scheduler's
small pool, one delivery worker per publisher; the caller's thread waits for a
stop signal.  Start order is storage first, network last; stop order is the
reverse, so nothing is taken in that cannot be stored.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from gateway.compose import Composer
from gateway.config import GatewayConfig
from gateway.delivery import DeliveryWorker, RetryPolicy
from gateway.history import HistoryStore, HistoryWriter
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.model import Post
from gateway.outbox import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import Publisher, PublisherContext
from gateway.rules import RuleRunner
from gateway.scheduler import RuleScheduler
from gateway.state import StateStore

log = logging.getLogger(__name__)

DB_NAME = "gateway.db"


def database_path(config: GatewayConfig) -> Path:
    """Where the outbox / local log lives."""
    return config.gateway.resolved_state_dir() / DB_NAME


class Gateway:
    """One gateway instance built from a validated config."""

    def __init__(self, config: GatewayConfig, *, retry_policy: RetryPolicy | None = None) -> None:
        self.config = config
        self.state_dir = config.gateway.resolved_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.tz = config.gateway.tz
        self.outbox = Outbox(self.state_dir / DB_NAME)
        self.state = StateStore(
            {s.id: s.expire_after for s in config.sensors if s.expire_after and not s.captures},
            windows=config.state.windows,
            max_sensors=config.state.max_sensors,
        )
        self.history = HistoryStore(self.state_dir / DB_NAME, self.state)
        self.history_writer = HistoryWriter(
            self.state,
            self.history,
            interval=config.state.history_flush_interval,
            retention=config.state.history_retention,
        )
        self.frames = FrameStore(self.state_dir / "media" / "frames", self.state)
        ctx = PublisherContext(self.state_dir, config.gateway.name, store=self.outbox)
        self.publishers: dict[str, Publisher] = {
            p.id: build_publisher(p, ctx) for p in config.publishers if p.enabled
        }
        self.workers = {
            pid: DeliveryWorker(self.outbox, pub, retry_policy)
            for pid, pub in self.publishers.items()
        }
        self.runner = RuleRunner(
            config=config,
            composer=Composer(config, self.state, self.state_dir / "media" / "posts"),
            outbox=self.outbox,
            capabilities={pid: pub.capabilities for pid, pub in self.publishers.items()},
            wake=self._wake,
            clock=self.now,
        )
        self.scheduler = RuleScheduler(config.rules, self.tz, self.runner.fire)
        self.ingest = MqttIngest(config, self.state, self.frames)
        self._stopped = threading.Event()

    def now(self) -> datetime:
        """The current time in the gateway's time zone."""
        return datetime.now(self.tz)

    def _wake(self, publisher_id: str) -> None:
        worker = self.workers.get(publisher_id)
        if worker is not None:
            worker.wake()

    def fire(self, rule_id: str) -> Post | None:
        """Fire a rule now (as the scheduler would)."""
        return self.runner.fire(rule_id)

    def start(self) -> None:
        """Recover the outbox, then start workers, frame writer, scheduler and ingest."""
        recovered = self.outbox.recover()
        if recovered:
            log.info("%d deliveries interrupted by a restart will be retried", recovered)
        for worker in self.workers.values():
            worker.start()
        self.frames.start()
        self.history_writer.start()
        self.scheduler.start()
        self.ingest.start()
        log.info(
            "gateway %s running: %d sensors, %d cameras, %d rules, publishers: %s; state in %s",
            self.config.gateway.name,
            len(self.config.sensors),
            len(self.config.cameras),
            len(self.config.rules),
            ", ".join(self.publishers) or "none",
            self.state_dir,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking readings, finish in-flight deliveries (up to ``timeout``), close storage."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.ingest.stop()
        self.scheduler.stop()
        self.frames.stop()
        self.history_writer.stop()
        self.history.close()
        for worker in self.workers.values():
            if not worker.stop(timeout):
                log.warning(
                    "publisher %s did not finish in time; its delivery stays queued",
                    worker.publisher.id,
                )
        for publisher in self.publishers.values():
            try:
                publisher.close()
            except Exception:
                log.exception("publisher %s failed to close", publisher.id)
        self.outbox.close()
        log.info("gateway stopped")

    def wait(self, stop: threading.Event, timeout: float | None = None) -> None:
        """Block until ``stop`` is set (or ``timeout`` passes)."""
        stop.wait(timeout)
