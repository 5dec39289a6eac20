"""The running gateway: wires ingest, state, rules, outbox and delivery together.

Threads, not asyncio: paho's network thread, a frame writer, the scheduler's
small pool, one delivery worker per publisher; the caller's thread waits for a
stop signal.  Start order is storage first, network last; stop order is the
reverse, so nothing is taken in that cannot be stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.compose.composer import Composer
from gateway.config import GatewayConfig, MqttCameraConfig, MqttConfig
from gateway.config.conversations import ReplyConfig
from gateway.config.rules import RuleConfig
from gateway.conversations.answering import Conversations, mention_event, strip_handles
from gateway.conversations.inbox import Inbox
from gateway.conversations.mqttask import AnswerPublisher, MqttAsks, answer_topic, ask_topic
from gateway.conversations.poller import MentionPoller
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.media.retention import RetentionJob
from gateway.model import MediaItem, Mention, Post
from gateway.outbox.delivery import DeliveryWorker, PostingBudget, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import (
    BrokerSettings,
    LiveCapabilities,
    Publisher,
    PublisherContext,
)
from gateway.publishers.file import FilePublisher
from gateway.rules import expr
from gateway.rules.firings import FiringQueue, RuleDispatch
from gateway.rules.guards import local_midnight, parse_quiet_hours
from gateway.rules.runner import RuleRunner
from gateway.rules.scheduler import RuleScheduler
from gateway.rules.triggers import (
    MessageRules,
    ThreadTimers,
    ThresholdWatcher,
    decode_event,
)
from gateway.runtime.guard import RetainedGuard
from gateway.runtime.paths import DB_NAME
from gateway.state.history import HistoryStore, HistoryWriter
from gateway.state.journal import ReadingJournal
from gateway.state.snapshot import (
    NEW_SENSOR_CHECK_SECONDS,
    SAVE_EVERY_SECONDS,
    SNAPSHOT_NAME,
    SnapshotWriter,
    restore_state,
)
from gateway.state.store import SensorSnapshot, StateStore

log = logging.getLogger(__name__)

RETAINED_WAIT = 10.0
"""Seconds event firings wait at most for the broker's SUBACK at start."""
DISPATCH_DRAIN = 1.0
"""Seconds queued event firings get at stop; the rest fire at the next start."""
RETAINED_GRACE = 1.0
FRESH_WAIT = 5.0
"""Seconds a reply waits for the fresh frames it asked its cameras for."""
ANSWER_MAX_AGE = 3600.0
"""Seconds an answer to an MQTT question is retried before it is given up."""
"""Seconds after the SUBACK for retained messages (sent right after it) to be taken."""
ShutdownHook = Callable[[], None]


def chart_horizon(config: GatewayConfig) -> timedelta:
    """How much reading history charts need: their longest window (at least a day)."""
    windows = [chart.window for rule in config.rules for chart in rule.charts]
    return max([timedelta(days=1), *windows])


def broker_settings(config: GatewayConfig) -> BrokerSettings:
    """The gateway's ``[mqtt]`` broker, handed to publishers that talk MQTT."""
    mqtt = config.mqtt
    return BrokerSettings(
        host=mqtt.host,
        port=mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        protocol=mqtt.protocol,
        keepalive=mqtt.keepalive,
    )


def condition_expiries(config: GatewayConfig) -> dict[str, timedelta]:
    """``expire_after`` of every sensor the ``when`` rules can name: the configured ids
    and the captured ones they use (``temp_kitchen`` of ``temp_{room}``)."""
    expire = {s.id: s.expire_after for s in config.sensors if s.expire_after}
    for rule in config.rules:
        for source in (rule.when, rule.clear_when):
            for name in expr.names(expr.parse(source)) if source else ():
                spec = config.sensor_for(name)
                if spec is not None and spec.expire_after is not None:
                    expire.setdefault(name, spec.expire_after)
    return expire


def own_topics(config: GatewayConfig) -> tuple[str, ...]:
    """Filters of every topic the gateway publishes to: never a rule's trigger."""
    topics = [f"{config.mqtt.status_prefix}/{config.gateway.name}/#"]
    for publisher in config.publishers:
        if isinstance(publisher, MqttConfig):
            for rule in config.rules:
                if publisher.id in rule.publish_to:
                    topics += publisher.topics_for(rule.id, config.gateway.name)
    return tuple(dict.fromkeys(topics))


class Gateway:
    """One gateway instance built from a validated config."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        retry_policy: RetryPolicy | None = None,
        retained: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``retained``: ``(topic, payload)`` messages besides ``online`` the gateway keeps
        retained and re-publishes when another client changes them (:mod:`.guard`)."""
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
        self.media_dir = self.state_dir / "media"
        self.frames = FrameStore(
            self.media_dir / "frames",
            self.state,
            keep_recent=config.media.keep_recent_frames,
            keep_every=config.media.keep_frame_every,
        )
        # per-minute readings in SQLite (plus the minutes not yet written): charts read it
        self.history = HistoryStore(self.state_dir / DB_NAME, self.state)
        # Readings not yet in the history are journaled: a SIGKILL loses none of them.
        self.journal = ReadingJournal(self.state_dir)
        self.history_writer = HistoryWriter(
            self.state,
            self.history,
            interval=config.state.history_flush_interval,
            retention=max(config.state.history_retention, chart_horizon(config)),
            journal=self.journal,
        )
        self.journal.on_full = self.history_writer.wake
        ctx = PublisherContext(
            self.state_dir, config.gateway.name, store=self.outbox, broker=broker_settings(config)
        )
        enabled = [p for p in config.publishers if p.enabled]
        # Building a publisher never touches the network; workers prepare them in their threads.
        self.publishers: dict[str, Publisher] = {p.id: build_publisher(p, ctx) for p in enabled}
        self.retention = RetentionJob(
            self.media_dir,
            max_age=config.media.max_age,
            max_bytes=config.media.max_bytes,
            interval=config.media.retention_interval,
            exclude=[p.folder for p in self.publishers.values() if isinstance(p, FilePublisher)],
            # media of posts still waiting for delivery stay until every retry is over
            keep=self.outbox.media_in_use,
        )
        self.workers = {
            p.id: DeliveryWorker(
                self.outbox,
                self.publishers[p.id],
                RetryPolicy.for_publisher(p, retry_policy),
                budget=PostingBudget.for_publisher(p, self.tz),
            )
            for p in enabled
        }
        # The static site links each post to where it went, as each delivery is sent.
        self._sites = [
            p.site
            for p in self.publishers.values()
            if isinstance(p, FilePublisher) and p.site is not None
        ]
        if self._sites:
            for worker in self.workers.values():
                worker.on_sent = self._link_on_sites
        self.runner = RuleRunner(
            config=config,
            composer=Composer(
                config,
                self.state,
                self.media_dir / "posts",
                frames=self.frames,
                history=self.history,
            ),
            outbox=self.outbox,
            # Read per post: a publisher's limits may change after start (Mastodon's do).
            capabilities=LiveCapabilities(self.publishers),
            wake=self._wake,
            clock=self.now,
        )
        self.scheduler = RuleScheduler(config.rules, self.tz, self.runner.fire)
        self.asks: MqttAsks | None = None
        self.pollers = self._mention_pollers(config)
        stall = config.health.stall_after.total_seconds()
        self.scheduler.add_heartbeat(self._scheduler_beat, max(1.0, min(10.0, stall / 4)))
        self.scheduler_heartbeat = time.monotonic()
        self.timers = ThreadTimers(self.now)
        # Event firings are queued in SQLite, committed before their message is acknowledged.
        self.firings = FiringQueue(self.state_dir / DB_NAME)
        self.dispatch = RuleDispatch(
            self.runner.fire, self.firings, deferred=lambda: self.ingest.in_network_thread()
        )
        expire = condition_expiries(config)
        self.watcher = ThresholdWatcher(
            config.rules, self.state, expire, self.now, self.timers, self.dispatch.submit
        )
        self.messages = MessageRules(
            config.rules, self.state, self.now, self.dispatch.submit, own_topics(config)
        )
        self.snapshot = SnapshotWriter(
            self.state, self.state_dir / SNAPSHOT_NAME, rules=self.watcher.saved_tracks
        )
        self.scheduler.add_periodic("save-state", self.snapshot.save, SAVE_EVERY_SECONDS)
        self.scheduler.add_periodic(
            "save-new-sensors", self.snapshot.save_if_new_sensors, NEW_SENSOR_CHECK_SECONDS
        )
        self.guard = RetainedGuard(config, retained)
        self.ingest = MqttIngest(
            config,
            self.state,
            self.frames,
            on_reading=self._on_reading,
            extra_topics=(
                *self.messages.topics,
                *self.guard.topics,
                *((self.asks.topic,) if self.asks else ()),
            ),
            on_extra=self._on_extra,
            on_batch_end=self._batch_end,
            seen_event=self._seen_event,
            state_dir=self.state_dir,
        )
        self.guard.publish = self.ingest.publish
        self.guard.connection = lambda: self.ingest.stats.connects
        self.shutdown_hooks: list[tuple[str, ShutdownHook]] = []
        self._stopped = threading.Event()

    def _link_on_sites(self, post_id: str, publisher_id: str, url: str) -> None:
        """A delivery worker's ``on_sent``: each static site links the post there."""
        for site in self._sites:
            site.add_link(post_id, publisher_id, url)

    def _batch_end(self) -> None:
        """Before a batch's PUBACKs (paho's thread): its event firings committed, then
        its readings and acknowledgements journaled."""
        self.dispatch.commit()
        self.journal.ack(self.ingest.batch_acks())
        self.journal.write()

    def _seen_event(self, topic: str, payload: bytes) -> bool:
        return self.dispatch.seen(topic, decode_event(payload))

    def _on_extra(self, topic: str, payload: bytes) -> None:
        """Ingest hook (paho's thread) for extra topics: event rules, retained guard."""
        self.guard.on_message(topic, payload)
        self.messages.on_message(topic, payload)
        if self.asks is not None:
            self.asks.on_message(topic, payload)

    def _on_reading(self, snapshot: SensorSnapshot) -> None:
        """Ingest hook (paho's thread): event rules, evaluated cheaply as readings arrive."""
        self.watcher.on_reading(snapshot)

    def add_shutdown_hook(self, name: str, hook: ShutdownHook) -> None:
        """Run ``hook`` on stop, after deliveries finished and before ``offline`` and the
        database closes (e.g. to flush buffered readings history).  Hooks run in the order
        added; one that raises is logged and the others still run."""
        self.shutdown_hooks.append((name, hook))

    def _scheduler_beat(self) -> None:
        self.scheduler_heartbeat = time.monotonic()

    def hung_components(self, stall_after: float) -> list[str]:
        """Threads that died or went silent for ``stall_after`` seconds; empty when healthy."""
        now = time.monotonic()
        problems = []
        if not self.ingest.is_alive():
            problems.append("ingest: MQTT network thread is not running")
        elif self.ingest.connected.is_set() and now - self.ingest.heartbeat > stall_after:
            problems.append(f"ingest: MQTT thread silent for {now - self.ingest.heartbeat:.0f}s")
        if not self.scheduler.is_alive():
            problems.append("scheduler: not running")
        elif now - self.scheduler_heartbeat > stall_after:
            silent = now - self.scheduler_heartbeat
            problems.append(f"scheduler: no heartbeat for {silent:.0f}s")
        if not self.frames.is_alive():
            problems.append("frames: writer thread is not running")
        for pid, worker in self.workers.items():
            if not worker.is_alive():
                problems.append(f"delivery {pid}: worker thread is not running")
            elif worker.stalled_for() > stall_after:
                problems.append(f"delivery {pid}: stuck for {worker.stalled_for():.0f}s")
        return problems

    def now(self) -> datetime:
        """The current time in the gateway's time zone."""
        return datetime.now(self.tz)

    def _wake(self, publisher_id: str) -> None:
        worker = self.workers.get(publisher_id)
        if worker is not None:
            worker.wake()

    def wake_deliveries(self) -> None:
        """Make every delivery worker re-read its next delivery now (a retry by hand)."""
        for worker in self.workers.values():
            worker.wake()

    def fire(self, rule_id: str) -> Post | None:
        """Fire a rule now (as the scheduler would), guards included."""
        return self.runner.fire(rule_id)

    def _mention_pollers(self, config: GatewayConfig) -> list[MentionPoller]:
        """One poller per publisher that can read mentions, when ``[conversations]`` is on."""
        if not config.conversations.enabled:
            return []
        composer = Composer(config, self.state, self.media_dir / "posts", frames=self.frames)
        names = RuleConfig.model_validate(
            {"id": "reply", "text": "-", "every": "1h", "publish_to": ["-"]}
        )
        self.inbox = Inbox(self.outbox.path)
        hours = config.conversations.quiet_hours
        quiet = parse_quiet_hours(hours) if hours else None
        self.conversations = Conversations(
            config.conversations,
            config.replies,
            self.inbox,
            self.outbox,
            context=lambda now: composer.context(names, now),
            tz=self.tz,
            quiet=quiet.contains if quiet else None,
            attach=lambda reply, post, targets: self._reply_photos(
                composer, names, reply, post, targets
            ),
            capabilities=LiveCapabilities(self.publishers),
        )
        self.inbox.on_new = self._on_mentions
        self.runner.composer.mention_counts = self._mention_counts
        if config.conversations.mqtt:
            self._mqtt_asks(config)
        interval = config.conversations.poll_interval.total_seconds()
        return [
            MentionPoller(
                p,  # type: ignore[arg-type]
                self.inbox,
                self.conversations,
                interval,
                streaming=config.conversations.streaming,
                wake=self.wake_deliveries,
            )
            for p in self.publishers.values()
            if callable(getattr(p, "read_mentions", None))
        ]

    def _reply_photos(
        self,
        composer: Composer,
        names: RuleConfig,
        reply: ReplyConfig,
        post: Post,
        targets: tuple[str, ...],
    ) -> tuple[Post, dict[str, tuple[MediaItem, ...]]]:
        """A reply's photos (fresh ones first when asked), and each target's copies."""
        if reply.fresh:
            self._fresh_frames([image.camera for image in reply.images])
        caps = {pid: self.publishers[pid].capabilities for pid in targets if pid in self.publishers}
        now = self.now()
        ctx = composer.context(names, now)
        media = composer.photos(post.rule, reply.images, post.id, ctx, now, caps)
        post = replace(post, media=media)
        return post, composer.fit_media(post, caps)

    def _fresh_frames(self, cameras: list[str]) -> None:
        """Ask each MQTT camera for a new frame (``<topic>/capture``, which
        ``things-device camera`` serves) and wait up to FRESH_WAIT for them all."""
        asked: dict[str, datetime] = {}
        for camera_id in dict.fromkeys(cameras):
            camera = self.config.camera(camera_id)
            if isinstance(camera, MqttCameraConfig):
                asked[camera_id] = self.now()
                self.ingest.publish(f"{camera.topic}/capture", b"", qos=1)
        deadline = time.monotonic() + FRESH_WAIT
        for camera_id, since in asked.items():
            while time.monotonic() < deadline:
                frame = self.state.latest_frame(camera_id)
                if frame is not None and frame.at >= since:
                    break
                self._stopped.wait(0.05)
            else:
                log.info(
                    "camera %s sent no new frame within %g s: its latest goes",
                    camera_id,
                    FRESH_WAIT,
                )

    def _mention_counts(self, now: datetime) -> dict[str, int]:
        """``mentions`` in rule templates: the last 24 hours, and ``today`` (local)."""
        counts = self.inbox.counts(now.timestamp() - 86400)
        counts["today"] = self.inbox.counts(local_midnight(now, self.tz).timestamp())["seen"]
        return counts

    def _on_mentions(self, mentions: list[Mention]) -> None:
        """New mentions are stored (any thread): fire the ``on_mention`` rules they match."""
        for rule in self.config.rules:
            trigger = rule.on_mention
            if trigger is None:
                continue
            for mention in mentions:
                if trigger.publishers and mention.publisher not in trigger.publishers:
                    continue
                words = strip_handles(mention.text).casefold()
                if trigger.match and not any(k.casefold() in words for k in trigger.match):
                    continue
                quoted = self.config.conversations.quote_chars
                self.dispatch.submit(rule.id, event=mention_event(mention, quoted))

    def _mqtt_asks(self, config: GatewayConfig) -> None:
        """Questions on the ask topic, and a delivery worker for their answers."""
        prefix, name = config.mqtt.status_prefix, config.gateway.name
        self.asks = MqttAsks(
            ask_topic(prefix, name), self.inbox, self.conversations, wake=self.wake_deliveries
        )
        answers = AnswerPublisher(
            answer_topic(prefix, name), lambda topic, payload: self.ingest.publish(topic, payload)
        )
        self.publishers[answers.id] = answers
        # an answer that could not go out within the hour is no longer an answer
        self.workers[answers.id] = DeliveryWorker(
            self.outbox,
            answers,
            RetryPolicy(base_delay=1.0, max_delay=60.0, max_age=ANSWER_MAX_AGE),
        )

    def start(self) -> None:
        """Recover the outbox, then start workers, frame writer, scheduler and ingest."""
        recovered = self.outbox.recover()
        if recovered:
            log.info("%d deliveries interrupted by a restart will be retried", recovered)
        self._restore_state()
        for worker in self.workers.values():
            worker.start()
        self.frames.start()
        self.history_writer.start()
        self.retention.start()
        self.scheduler.start()
        self.watcher.start()
        self.dispatch.start()
        self.ingest.start()
        for poller in self.pollers:
            poller.start()
        if self.asks is not None:
            self.asks.start()
        threading.Thread(target=self._open_gate, name="rules-gate", daemon=True).start()
        log.info(
            "gateway %s running: %d sensors, %d cameras, %d rules, publishers: %s; state in %s",
            self.config.gateway.name,
            len(self.config.sensors),
            len(self.config.cameras),
            len(self.config.rules),
            ", ".join(self.publishers) or "none",
            self.state_dir,
        )

    def _open_gate(self) -> None:
        """Event firings wait for the retained messages (camera frames above all), bounded:
        the broker sends them after the SUBACK, so firings start a moment after it."""
        self.ingest.ready.wait(RETAINED_WAIT)
        self._stopped.wait(RETAINED_GRACE)
        self.dispatch.open_gate()

    def _restore_state(self) -> None:
        """The latest values saved in ``state.json`` (every 5 minutes and at stop), with
        their own reading times: a restart or reload does not blank every sensor, and
        ``expire_after`` still makes an old value stale.  The rolling windows come back
        from the per-minute history, the ``when`` rules' armed/fired state from the
        snapshot (:func:`gateway.state.snapshot.restore_state`)."""
        restored = restore_state(self.config, self.state, self.history, self.now())
        # Journal files the history holds go; readings from now on go to a new one.
        self.journal.open(restored.mark)
        self.state.journal = self.journal
        replayed = restored.journal
        self.ingest.remember_acked(restored.acks)
        if replayed.readings or replayed.carried or replayed.bad_lines:
            log.info(
                "the last run ended without writing %d readings to the history: counted"
                " them from its journal%s",
                replayed.readings + replayed.carried,
                f" ({replayed.bad_lines} damaged lines skipped)" if replayed.bad_lines else "",
            )
        data = restored.snapshot
        if data is None:
            return
        rules = data.get("rules")
        kept = self.watcher.restore_tracks(rules) if isinstance(rules, dict) else []
        log.info(
            "restored %d sensor values from %s%s",
            len(self.state.sensors()),
            self.snapshot.path,
            f"; rules already fired or pending: {', '.join(kept)}" if kept else "",
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop in order: readings, schedules, frames; in-flight deliveries get ``timeout``
        seconds (default ``[health] shutdown_timeout``) and the rest stay in the outbox;
        shutdown hooks; ``offline`` on the status topic; publishers; the database."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.guard.stopping = True  # the offline written at the end is ours
        if timeout is None:
            timeout = self.config.health.shutdown_timeout.total_seconds()
        deadline = time.monotonic() + timeout
        self.ingest.pause()
        for poller in self.pollers:
            poller.stop(max(0.0, deadline - time.monotonic()))
        if self.asks is not None:
            self.asks.stop(max(0.0, deadline - time.monotonic()))
        self.watcher.stop()
        self.timers.stop()
        self.scheduler.stop()
        self.dispatch.stop(max(0.0, min(DISPATCH_DRAIN, deadline - time.monotonic())))
        self.firings.close()
        self.snapshot.save()
        self.frames.stop()
        self.retention.stop()
        self.history_writer.stop()
        self.history.close()
        for worker in self.workers.values():
            worker.request_stop()
        for worker in self.workers.values():
            if not worker.stop(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "publisher %s did not finish in time; its delivery stays queued",
                    worker.publisher.id,
                )
        for name, hook in self.shutdown_hooks:
            try:
                hook()
            except Exception:
                log.exception("shutdown hook %s failed", name)
        self.ingest.stop()
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
