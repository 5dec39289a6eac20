"""The MQTT side of ingest: a thin adapter over paho-mqtt 2.x.

``on_message`` runs in paho's network thread and must stay fast: one cached
route lookup per topic, decode, update state, call the event hook, hand frames to
a queue.  No disk or network I/O happens here, and no logging on the good path.
Subscriptions are (re)made in ``on_connect`` so they survive every reconnect.

Bad input (invalid UTF-8, non-numbers, missing fields, NaN, out of range, too
large, absurdly nested JSON) is counted per sensor, logged at most once a minute
per sensor, and dropped; nothing a broker can send stops ingest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from gateway.config import GatewayConfig
from gateway.ingest.client import client_id, connect_kwargs, make_client, status_topic
from gateway.ingest.decoders import DecodeError, parse_availability, parse_json
from gateway.ingest.routes import Route, RouteTable
from gateway.ingest.takeover import TakeoverDetector
from gateway.state.store import SensorSnapshot, StateStore
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
    takeovers: int = 0
    """Session takeovers: another client connected with the gateway's client id."""


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
    ) -> None:
        """``on_reading`` is called after each state update; ``on_extra(topic, payload)``
        for each message on ``extra_topics`` (event rules).  Both run in paho's thread."""
        self._config = config
        self._state = state
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
        self._paused = False
        """Set once by pause()/stop(); a plain flag, read for every message."""
        self.heartbeat = time.monotonic()
        """Last time paho's network thread ran one of our callbacks (monotonic)."""
        self._client = make_client(config)
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
        """Stop taking readings and frames; the connection stays up (to publish ``offline``)."""
        self._paused = True

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
        self._paused = True
        if self.connected.is_set():
            info = self._client.publish(status_topic(self._config), "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()

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

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
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
            return  # shutting down: readings are ephemeral, a late one is simply not taken
        self.stats.messages += 1
        try:
            t = _time()
            self._handle(topic, payload, _fromtimestamp(t, UTC), t, retained)
        except Exception:  # a bug here must never kill paho's thread
            self._rate_log.warning("bug", "unexpected error handling a message", exc_info=True)

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
        if self._extra_topics and self._on_extra is not None:
            self._maybe_event(topic, payload)
        route = self._routes.get(topic) or self.routes.route(topic)
        if route.empty:
            self.stats.unrouted += 1
            return
        size = len(payload)
        if size > self._max_payload:
            self._oversized(route, topic, size, self._max_payload)
            return
        if route.cameras:
            for camera in route.cameras:
                self._frames.offer(camera, payload, at, retained=retained)
        if route.sensors:
            if size > self._max_sensor_payload:
                self._oversized(route, topic, size, self._max_sensor_payload)
            else:
                self._readings(route, payload, at, t)
        if route.availability:
            self._availability(route, topic, payload)

    def _maybe_event(self, topic: str, payload: bytes) -> None:
        """Hand messages on ``on_message`` rules' topics to their hook (it only queues work)."""
        if not any(mqtt.topic_matches_sub(f, topic) for f in self._extra_topics):
            return
        assert self._on_extra is not None
        try:
            self._on_extra(topic, payload)
        except Exception:
            self._rate_log.warning(
                f"event:{topic}", "event hook failed for %s", topic, exc_info=True
            )

    def _readings(self, route: Route, payload: bytes, at: datetime, t: float) -> None:
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
