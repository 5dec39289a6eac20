"""The MQTT side of ingest: a thin adapter over paho-mqtt 2.x.

``on_message`` runs in paho's network thread and must stay fast: it decodes,
updates state and hands frames to a queue.  No disk or network I/O happens here.
Subscriptions are (re)made in ``on_connect`` so they survive every reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import CameraConfig, GatewayConfig, MqttCameraConfig, SensorConfig
from gateway.ingest.decoders import DecodeError, decode_payload
from gateway.ingest.topics import TopicRouter
from gateway.logutil import RateLimitedLog
from gateway.media.frames import FrameStore
from gateway.model import Reading
from gateway.state import SensorSnapshot, StateStore

log = logging.getLogger(__name__)

Target = SensorConfig | CameraConfig
ReadingListener = Callable[[SensorSnapshot], None]
MessageListener = Callable[[str, bytes], None]


@dataclass
class IngestStats:
    """Counters of what the MQTT thread has seen."""

    messages: int = 0
    readings: int = 0
    rejected: int = 0
    oversized: int = 0


def build_router(config: GatewayConfig) -> TopicRouter[Target]:
    """Route every sensor and MQTT camera topic of the config."""
    router: TopicRouter[Target] = TopicRouter()
    for sensor in config.sensors:
        router.add(sensor.topic, sensor)
    for camera in config.cameras:
        if isinstance(camera, MqttCameraConfig):  # the other sources are pulled, not pushed
            router.add(camera.topic, camera)
    return router


def status_topic(config: GatewayConfig) -> str:
    """The retained ``online``/``offline`` topic of this gateway."""
    return f"{config.mqtt.status_prefix}/{config.gateway.name}/status"


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
        self._router = build_router(config)
        self._rate_log = RateLimitedLog(log)
        self.stats = IngestStats()
        self.ready = threading.Event()
        self.connected = threading.Event()
        self._pending_subs: set[int] = set()
        self._paused = threading.Event()
        self.heartbeat = time.monotonic()
        """Last time paho's network thread ran one of our callbacks (monotonic)."""
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self._config.mqtt
        v5 = cfg.protocol == 5
        client_id = cfg.client_id or f"{self._config.gateway.name}-gw"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not cfg.persistent_session,
        )
        if cfg.username:
            password = cfg.password.get_secret_value() if cfg.password else None
            client.username_pw_set(cfg.username, password)
        client.will_set(status_topic(self._config), "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.max_queued_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting if the broker is down."""
        cfg = self._config.mqtt
        kwargs: dict[str, Any] = {}
        if cfg.protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if cfg.persistent_session:
                props.SessionExpiryInterval = int(cfg.session_expiry.total_seconds())
            kwargs = {"clean_start": not cfg.persistent_session, "properties": props}
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive, **kwargs)
        self._client.loop_start()
        log.info("connecting to MQTT broker %s:%d", cfg.host, cfg.port)

    def pause(self) -> None:
        """Stop taking readings and frames; the connection stays up (to publish ``offline``)."""
        self._paused.set()

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
        self._paused.set()
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

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.heartbeat = time.monotonic()
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        self.connected.set()
        log.info("connected to MQTT broker (session present: %s)", flags.session_present)
        client.publish(status_topic(self._config), "online", qos=1, retain=True)
        topics = list(dict.fromkeys([*self._router.subscriptions(), *self._extra_topics]))
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
        if reason.is_failure:
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self.heartbeat = time.monotonic()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.heartbeat = time.monotonic()
        if self._paused.is_set():
            return  # shutting down: readings are ephemeral, a late one is simply not taken
        self.stats.messages += 1
        try:
            self.handle(message.topic, bytes(message.payload))
        except Exception:  # a bug here must never kill paho's thread
            log.exception("unexpected error handling a message on %s", message.topic)

    def handle(self, topic: str, payload: bytes, at: datetime | None = None) -> None:
        """Decode one message and update state; bad payloads are counted, logged, dropped."""
        at = at or datetime.now(UTC)
        if len(payload) > self._config.mqtt.max_payload_bytes:
            self.stats.oversized += 1
            self._rate_log.warning(
                f"size:{topic}", "dropped a %d-byte message on %s", len(payload), topic
            )
            return
        for target in self._router.match(topic):
            if isinstance(target, CameraConfig):
                self._frames.offer(target.id, payload, at)
            else:
                self._handle_sensor(target, topic, payload, at)
        if self._on_extra is not None and any(
            mqtt.topic_matches_sub(f, topic) for f in self._extra_topics
        ):
            self._on_extra(topic, payload)

    def _handle_sensor(
        self, sensor: SensorConfig, topic: str, payload: bytes, at: datetime
    ) -> None:
        try:
            value = decode_payload(payload, sensor.format, sensor.field)
        except DecodeError as exc:
            self.stats.rejected += 1
            total = self._state.reject(sensor.id, str(exc))
            self._rate_log.warning(
                f"decode:{sensor.id}",
                "sensor %s: rejected payload on %s: %s (%d rejected so far)",
                sensor.id,
                topic,
                exc,
                total,
            )
            return
        self.stats.readings += 1
        snapshot = self._state.update(Reading(sensor.id, value, sensor.unit, at, topic))
        if self._on_reading is not None:
            self._on_reading(snapshot)
