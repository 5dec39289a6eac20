"""The MQTT side of ingest: a thin adapter over paho-mqtt 2.x.

``on_message`` runs in paho's network thread and must stay fast: one cached
route lookup per topic, decode, update state, call the event hook, hand frames to
a queue.  No disk or network I/O happens here, and no logging on the good path.
Subscriptions are (re)made in ``on_connect`` so they survive every reconnect.

Bad input (invalid UTF-8, non-numbers, missing fields, NaN, out of range, too
large, absurdly nested JSON) is counted per sensor, logged at most once a minute
per sensor, and dropped; nothing a broker can send stops ingest.  Every topic,
event topics included, is bounded by ``max_payload_bytes`` before anything is
decoded; a larger packet is discarded while read (never buffered), counted and
acknowledged, so the broker does not send it again.

Never fatal twice: before a large message (:data:`WATCH_BYTES` and more) is
handled, its packet size and topic are written to ``<state_dir>/ingest-inflight``
and removed after.  A file left there means that message stopped the previous run
(say, the kernel's OOM killer while it was buffered): it joins
``<state_dir>/ingest-poison``, and from then on such a packet is discarded while
read (never buffered), acknowledged, counted and logged.

Shutting down, :meth:`MqttIngest.pause` stops taking *and acknowledging*
messages: QoS 1 readings published while the gateway stops stay with the broker
for the next start (with a persistent session).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from gateway.config import GatewayConfig
from gateway.ingest.client import client_id, connect_kwargs, make_client, status_topic
from gateway.ingest.decoders import DecodeError, parse_availability, parse_json
from gateway.ingest.fastclient import IngestClient
from gateway.ingest.routes import Route, RouteTable, SensorBinding
from gateway.ingest.takeover import TakeoverDetector
from gateway.model import Value
from gateway.state.store import UNKNOWN_TIME, SensorSnapshot, StateStore
from gateway.support.ratelog import RateLimitedLog

if TYPE_CHECKING:  # FrameStore pulls in Pillow; ingest only needs its offer()
    from gateway.media.frames import FrameStore

__all__ = ["IngestStats", "MqttIngest", "ReadingListener", "status_topic"]

log = logging.getLogger(__name__)
_monotonic = time.monotonic
_time = time.time
_fromtimestamp = datetime.fromtimestamp

ReadingListener = Callable[[SensorSnapshot], None]
"""Called in paho's thread for every accepted reading: the event-rule hook. Keep it cheap."""
MessageListener = Callable[[str, bytes], None]
SeenEvent = Callable[[str, bytes], bool]
"""True when an event message (redelivered: MQTT's DUP flag) was already recorded."""
WATCH_BYTES = 256 * 1024
"""Messages this large or larger are fingerprinted before handling (see the module doc)."""
INFLIGHT_NAME = "ingest-inflight"
POISON_NAME = "ingest-poison"
POISON_KEEP = 32


@dataclass
class IngestStats:
    """Counters of what the MQTT thread has seen."""

    messages: int = 0
    readings: int = 0
    rejected: int = 0
    oversized: int = 0
    unrouted: int = 0
    availability: int = 0
    connects: int = 0
    duplicates: int = 0
    """Redelivered messages (DUP) already handled, acknowledged and not handled again."""
    poisoned: int = 0
    """Messages skipped because one like them stopped a previous run."""
    takeovers: int = 0
    """Session takeovers: another client connected with the gateway's client id."""
    broker_dropped: int | None = None
    """Messages the broker says it dropped (all clients: queue or in-flight limits), from
    :data:`BROKER_DROPPED`; None while the broker has not told (no $SYS, or not allowed)."""


BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"
"""mosquitto's count of messages dropped over its queue limits (``sys_interval``)."""


def heartbeat_topic(config: GatewayConfig) -> str:
    """Where :meth:`MqttIngest.ping` sends its QoS 1 probes (nobody needs to listen)."""
    return f"{config.mqtt.status_prefix}/{config.gateway.name}/heartbeat"


class MqttIngest:
    """Subscribes to the config's topics and feeds readings and frames into state."""

    def __init__(
        self,
        config: GatewayConfig,
        state: StateStore,
        frames: FrameStore,
        on_reading: ReadingListener | None = None,
        *,
        extra_topics: Sequence[str] = (),
        on_extra: MessageListener | None = None,
        on_batch_end: Callable[[], None] | None = None,
        seen_event: SeenEvent | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """``on_reading`` is called after each state update; ``on_extra(topic, payload)``
        for each message on ``extra_topics`` (event rules).  Both run in paho's thread.
        ``on_batch_end`` runs before acknowledgements are written (commit firings there);
        ``seen_event`` recognises a redelivered event; ``state_dir`` keeps the poison files."""
        self._config = config
        self._state = state
        self._tz = config.gateway.tz
        self._frames = frames
        self._on_reading = on_reading
        self._extra_topics = tuple(extra_topics)
        self._on_extra = on_extra
        self.routes = RouteTable(config, state)
        self._routes = self.routes.cache
        self._max_payload = config.mqtt.max_payload_bytes
        self._max_sensor_payload = config.mqtt.max_sensor_payload_bytes
        self._rate_log = RateLimitedLog(log)
        self.stats = IngestStats()
        self.takeover = TakeoverDetector()
        self.ready = threading.Event()
        self.connected = threading.Event()
        self._pending_subs: set[int] = set()
        self._sys_mid: int | None = None
        self._paused = False
        """Set once by pause()/stop(); a plain flag, read for every message."""
        self.heartbeat = time.monotonic()
        """Last time paho's network thread ran one of our callbacks (monotonic)."""
        self._seen_event = seen_event
        self._fallback_logged = False
        self._inflight = state_dir / INFLIGHT_NAME if state_dir is not None else None
        self._client: IngestClient = make_client(config)
        self._watching = False
        if state_dir is not None:
            self._client.poison = load_poison(state_dir)
            self._client.watch_size = WATCH_BYTES
            self._client.on_watch = self._watch
        self._client.on_batch_end = on_batch_end
        self._client.on_refused = self._on_refused
        self._client.on_protocol_fallback = self._on_protocol_fallback
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_fast_message = self._on_fast_message
        self._client.on_publish = self._on_publish

    def start(self) -> None:
        """Connect in the background; paho retries (with backoff) while the broker is down."""
        cfg = self._config.mqtt
        self._client.connect_async(
            cfg.host, cfg.port, keepalive=cfg.keepalive, **connect_kwargs(cfg)
        )
        self._client.loop_start()
        log.info(
            "connecting to MQTT broker %s:%d as %s%s",
            cfg.host,
            cfg.port,
            client_id(self._config),
            " (TLS)" if cfg.tls else "",
        )

    def pause(self) -> None:
        """Stop taking (and acknowledging) messages; the connection stays up (to publish
        ``offline``), and the broker keeps QoS 1 messages for the next start."""
        self._paused = True
        self._client.pause_acks()

    def batch_acks(self) -> list[tuple[int, int]]:
        """The messages the current batch acknowledges (paho's thread, at batch end)."""
        return self._client.batch_acks()

    def remember_acked(self, acks: Mapping[int, int]) -> None:
        """Messages a previous run took and acknowledged (see the client's docs)."""
        self._client.remember_acked(acks)

    def in_network_thread(self) -> bool:
        """True in paho's network thread (whose firings are committed per batch)."""
        return threading.current_thread() is getattr(self._client, "_thread", None)

    def ping(self) -> None:
        """Send a QoS 1 probe; its PUBACK, handled in paho's thread, refreshes ``heartbeat``."""
        if self.connected.is_set():
            self._client.publish(heartbeat_topic(self._config), b"", qos=1)

    def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False
    ) -> bool:
        """Publish on the gateway's own connection; False when not connected."""
        if not self.connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``offline``, disconnect and stop paho's thread."""
        self.pause()
        if self.connected.is_set():
            info = self._client.publish(status_topic(self._config), "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        stats = self.stats
        log.info(
            "ingest totals: %d messages, %d readings, %d rejected, %d oversized,"
            " %d duplicates, %d poisoned",
            stats.messages,
            stats.readings,
            stats.rejected,
            stats.oversized,
            stats.duplicates + self._client.duplicates,
            stats.poisoned,
        )

    def is_alive(self) -> bool:
        """True while paho's network thread runs."""
        thread = getattr(self._client, "_thread", None)
        return thread is not None and thread.is_alive()

    # -- paho callbacks ------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.heartbeat = time.monotonic()
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        if self.takeover.connected():
            self._taken_over()
        self.stats.connects += 1
        self.connected.set()
        log.info("connected to MQTT broker (session present: %s)", flags.session_present)
        client.publish(status_topic(self._config), "online", qos=1, retain=True)
        topics = list(dict.fromkeys([*self.routes.subscriptions(), *self._extra_topics]))
        if not topics:
            self.ready.set()
            return
        result, mid = client.subscribe([(t, int(self._config.mqtt.qos)) for t in topics])
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subs.add(mid)
        # apart, so a broker without $SYS (or an ACL refusing it) delays nothing
        result, self._sys_mid = client.subscribe(BROKER_DROPPED, 0)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if mid == self._sys_mid:
            if failed:
                log.info("the broker does not let us read %s: %s", BROKER_DROPPED, failed)
            return
        if failed:
            log.error("broker refused %d subscription(s): %s", len(failed), failed)
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.heartbeat = time.monotonic()
        self.connected.clear()
        self.ready.clear()
        self._pending_subs.clear()
        if reason.is_failure:
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)
        if self.takeover.disconnected(getattr(reason, "value", -1), reason.is_failure):
            self._taken_over()

    def _taken_over(self) -> None:
        """Say loudly that another client uses this gateway's client id."""
        self.stats.takeovers = self.takeover.takeovers
        self._rate_log.error(
            "takeover",
            "MQTT SESSION TAKEN OVER (%d times): another client connects with this gateway's"
            " client id %r and receives its queued readings; give the gateway a client id"
            " nobody else uses ([mqtt] client_id) and restrict it with broker ACLs"
            " (config/mosquitto-acl.example)",
            self.takeover.takeovers,
            client_id(self._config),
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self.heartbeat = time.monotonic()

    def _on_fast_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """A plain QoS 0/1 message, straight from :class:`IngestClient`'s fast path
        (which never passes a retained one: those come through :meth:`_on_message`)."""
        self.heartbeat = _monotonic()
        if self._paused:
            if self._watching:
                self._unwatch()
            return  # shutting down: not taken, not acknowledged (the broker keeps it)
        self.stats.messages += 1
        try:
            t = _time()
            self._handle(topic, payload, _fromtimestamp(t, UTC), t, retained)
        except Exception:  # a bug here must never kill paho's thread
            self._rate_log.warning("bug", "unexpected error handling a message", exc_info=True)
        if self._watching:
            self._unwatch()

    def _watch(self, size: int, topic: str) -> None:
        """Note a large message before it is read whole and handled (see the module doc)."""
        assert self._inflight is not None
        self._watching = True
        with contextlib.suppress(OSError):
            self._inflight.write_text(poison_line(size, topic), encoding="utf-8")

    def _unwatch(self) -> None:
        assert self._inflight is not None
        self._watching = False
        with contextlib.suppress(OSError):
            self._inflight.unlink()

    def _on_refused(self, topic: str, size: int, poison: bool) -> None:
        """A packet discarded while read by the client (and acknowledged): over the size
        limit, or a message that stopped a previous run."""
        self.heartbeat = _monotonic()
        self.stats.messages += 1
        if poison:
            self.stats.poisoned += 1
            self._rate_log.warning(
                f"poison:{topic}",
                "skipped a %d-byte message on %s: one like it stopped a previous run",
                size,
                topic,
            )
            return
        route = self._routes.get(topic) or self.routes.route(topic)
        self._oversized(route, topic, size, self._max_payload)

    def _on_protocol_fallback(self, answer: str) -> None:
        if not self._fallback_logged:
            self._fallback_logged = True
            log.warning(
                "the MQTT broker does not speak MQTT 5 (%s): using MQTT 3.1.1;"
                " set protocol = 311 in [mqtt] to say so",
                answer,
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Messages paho decoded itself (MQTT 5 properties, QoS 2, a non-UTF-8 topic)."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker should refuse these; count and drop
            self.heartbeat = _monotonic()
            self.stats.messages += 1
            self.stats.unrouted += 1
            self._rate_log.warning("topic", "dropped a message whose topic is not UTF-8")
            return
        payload = message.payload
        payload = payload if type(payload) is bytes else bytes(payload)
        self._on_fast_message(topic, payload, bool(message.retain))

    # -- message handling (paho's thread) ----------------------------------------------

    def handle(self, topic: str, payload: bytes, at: datetime | None = None) -> None:
        """Decode one message and update state; bad payloads are counted, logged, dropped."""
        if at is None:
            t = _time()
            at = _fromtimestamp(t, UTC)
        else:
            t = at.timestamp()
        self._handle(topic, payload, at, t)

    def _handle(
        self, topic: str, payload: bytes, at: datetime, t: float, retained: bool = False
    ) -> None:
        """:meth:`handle` with ``at`` and ``t`` (the same instant) known.

        ``retained``: the broker kept this message from before we subscribed, so ``at``
        is not when it was taken; a camera frame is then not stored as a new one.
        """
        route = self._routes.get(topic) or self.routes.route(topic)
        size = len(payload)
        if size > self._max_payload:  # before anything is decoded, event topics included
            self._oversized(route, topic, size, self._max_payload)
            return
        if self._extra_topics and self._on_extra is not None:
            self._maybe_event(topic, payload)
        if route.empty:
            if topic == BROKER_DROPPED:
                self._broker_dropped(payload)
                return
            self.stats.unrouted += 1
            return
        if route.cameras:
            for camera in route.cameras:
                self._frames.offer(camera, payload, at, retained=retained)
        if route.sensors:
            if size > self._max_sensor_payload:
                self._oversized(route, topic, size, self._max_sensor_payload)
            else:
                self._readings(route, payload, at, t, retained)
        if route.availability:
            self._availability(route, topic, payload)

    def _broker_dropped(self, payload: bytes) -> None:
        self.stats.messages -= 1  # the broker's own counter, not a message on our topics
        try:
            dropped = int(payload)
        except ValueError:
            return
        previous = self.stats.broker_dropped
        self.stats.broker_dropped = dropped
        if previous is not None and dropped > previous:
            self._rate_log.warning(
                "broker-dropped",
                "the broker dropped %d messages (%d in all) over its queue limits: readings"
                " may be lost; see config/mosquitto.conf",
                dropped - previous,
                dropped,
            )

    def _maybe_event(self, topic: str, payload: bytes) -> None:
        """Hand messages on ``on_message`` rules' topics to their hook (it only queues work)."""
        if not any(mqtt.topic_matches_sub(f, topic) for f in self._extra_topics):
            return
        assert self._on_extra is not None
        if self._client.in_dup and self._seen_event is not None:
            try:
                seen = self._seen_event(topic, payload)
            except Exception:
                self._rate_log.warning("seen", "cannot check a redelivered event", exc_info=True)
                seen = False
            if seen:  # recorded before its PUBACK was lost: not fired twice
                self.stats.duplicates += 1
                return
        try:
            self._on_extra(topic, payload)
        except Exception:
            self._rate_log.warning(
                f"event:{topic}", "event hook failed for %s", topic, exc_info=True
            )

    def _readings(
        self, route: Route, payload: bytes, at: datetime, t: float, retained: bool = False
    ) -> None:
        topic = route.topic
        document: Any = None
        bad_json: DecodeError | None = None
        if route.needs_json:  # parsed once for every sensor reading this topic
            try:
                document = parse_json(payload)
            except DecodeError as exc:
                bad_json = exc
        record = self._state.record
        on_reading = self._on_reading
        stats = self.stats
        for binding in route.sensors:
            try:
                if bad_json is not None and binding.is_json:
                    raise bad_json
                value = binding.decode(payload, document)
            except DecodeError as exc:
                self._reject(binding.sensor, topic, str(exc))
                continue
            stats.readings += 1
            unit = binding.unit if binding.fixed_unit else binding.unit_for(document)
            if retained:  # kept by the broker from before: not taken now
                at_sent = self._retained_time(binding, value, document, t)
                if at_sent is None:
                    continue  # the reading already known, with its real time
                snapshot = record(binding.sensor, value, unit, at_sent, topic, at_sent.timestamp())
            else:
                snapshot = record(binding.sensor, value, unit, at, topic, t)
            if snapshot is not None and on_reading is not None:
                try:
                    on_reading(snapshot)
                except Exception:
                    self._rate_log.warning(
                        f"hook:{binding.sensor}",
                        "event hook failed for %s",
                        binding.sensor,
                        exc_info=True,
                    )

    def _retained_time(
        self, binding: SensorBinding, value: Value, document: Any, now: float
    ) -> datetime | None:
        """When a retained reading was taken: the payload's own time (``time_field``),
        else unknown (:data:`UNKNOWN_TIME`: stale, no age, not in the windows).  None
        when it is the value already known (restored from ``state.json``), whose time
        is kept."""
        sent = binding.sent_at(document, self._tz, now)
        if sent is not None:
            return _fromtimestamp(sent, UTC)
        known = self._state.get(binding.sensor)
        if known is not None and known.value == value:
            return None
        return UNKNOWN_TIME

    def _availability(self, route: Route, topic: str, payload: bytes) -> None:
        try:
            online = parse_availability(payload)
        except DecodeError as exc:
            self._rate_log.warning(
                f"availability:{topic}", "unreadable availability on %s: %s", topic, exc
            )
            return
        self.stats.availability += 1
        for sensor in route.availability:
            self._state.set_online(sensor, online)

    def _oversized(self, route: Route, topic: str, size: int, limit: int) -> None:
        self.stats.oversized += 1
        if route.cameras:
            self._rate_log.warning(
                f"size:{topic}", "dropped a %d-byte frame on %s (limit %d)", size, topic, limit
            )
        for binding in route.sensors:
            self._reject(binding.sensor, topic, f"payload of {size} bytes is over {limit}")
        if not route.sensors:
            self._rate_log.warning(
                f"size:{topic}", "dropped a %d-byte message on %s (limit %d)", size, topic, limit
            )

    def _reject(self, sensor: str, topic: str, reason: str) -> None:
        self.stats.rejected += 1
        total = self._state.reject(sensor, reason)
        self._rate_log.warning(
            f"decode:{sensor}",
            "sensor %s: rejected payload on %s: %s (%d rejected so far)",
            sensor,
            topic,
            reason,
            total,
        )


def poison_line(size: int, topic: str) -> str:
    """A message's line in the poison files: its packet size and topic."""
    return f"{size}\t{topic}"


def load_poison(state_dir: Path) -> set[tuple[int, str]]:
    """The messages that stopped a run; a run stopped now adds its own."""
    inflight = state_dir / INFLIGHT_NAME
    poison = state_dir / POISON_NAME
    lines: list[str] = []
    with contextlib.suppress(OSError):
        lines = poison.read_text(encoding="utf-8").splitlines()
    try:
        stopped = inflight.read_text(encoding="utf-8").strip("\n")
    except OSError:
        stopped = ""
    if stopped:
        size, _tab, topic = stopped.partition("\t")
        log.error(
            "the previous run stopped while handling a %s-byte message on %s;"
            " that message is skipped from now on",
            size,
            topic,
        )
        kept = [line for line in lines if line != stopped][-(POISON_KEEP - 1) :]
        lines = [*kept, stopped]
        with contextlib.suppress(OSError):
            tmp = poison.with_suffix(".tmp")
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(tmp, poison)
            inflight.unlink()
    marks = set()
    for line in lines:
        size, _tab, topic = line.partition("\t")
        if size.isdigit():
            marks.add((int(size), topic))
    return marks
