"""``things-device camera``: grab frames and publish them as retained MQTT messages.

A frame is taken every ``interval`` seconds and whenever any message arrives on
the command topic (default ``<topic>/capture``).  Frames larger than
``max_bytes`` are re-encoded smaller, so a broker's message limit and a Pi's
memory are never exceeded.  The agent has its own last will: ``<topic>/status``
is ``online`` while it runs and ``offline`` (retained) when it stops or vanishes.
paho reconnects by itself; while the broker is away no frame is queued.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.sources import FrameSource, FrameSourceError, fit_jpeg

log = logging.getLogger(__name__)


class CameraAgent:
    """Publishes frames from a :data:`FrameSource` to one topic."""

    def __init__(
        self,
        source: FrameSource,
        *,
        host: str,
        port: int,
        topic: str,
        interval: float = 60.0,
        command_topic: str | None = None,
        max_bytes: int = 1_000_000,
        qos: int = 1,
        protocol: int = 311,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """Configure; nothing connects until :meth:`start`.  ``interval`` 0: on request only."""
        self.source = source
        self.host, self.port = host, port
        self.topic = topic.rstrip("/")
        self.status_topic = f"{self.topic}/status"
        self.command_topic = command_topic or f"{self.topic}/capture"
        self.interval = interval
        self.max_bytes = max_bytes
        self.qos = qos
        self.published = 0
        self.failures = 0
        self._requested = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        version = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"things-camera-{uuid.uuid4().hex[:8]}",
            protocol=version,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._client.max_queued_messages_set(2)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected to %s:%d; frames go to %s", self.host, self.port, self.topic)
        client.publish(self.status_topic, "online", qos=1, retain=True)
        client.subscribe(self.command_topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._requested.set()

    def start(self) -> None:
        """Connect in the background and start capturing."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._loop, name="camera-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop capturing, publish ``offline`` and disconnect."""
        self._stop.set()
        self._requested.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._client.is_connected():
            info = self._client.publish(self.status_topic, "offline", qos=1, retain=True)
            info.wait_for_publish(3)
        self._client.disconnect()
        self._client.loop_stop()

    def run(self, duration: float | None = None) -> None:
        """Run until ``duration`` seconds pass (None: forever) or Ctrl-C/SIGTERM."""
        self.start()
        try:
            self._stop.wait(duration)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            timeout = None if self.interval <= 0 else max(0.0, next_at - time.monotonic())
            requested = self._requested.wait(timeout)
            self._requested.clear()
            if self._stop.is_set():
                return
            if not self._client.is_connected():
                if requested or self.interval <= 0:
                    continue
                self._stop.wait(0.5)  # the first frame goes out as soon as we are connected
                continue
            self.capture_and_publish()
            if not requested or self.interval > 0:
                next_at = time.monotonic() + self.interval

    def capture_and_publish(self) -> bool:
        """Take one frame and publish it retained; False (logged once per error) on failure."""
        try:
            frame = fit_jpeg(self.source(), self.max_bytes)
        except FrameSourceError as exc:
            self.failures += 1
            if str(exc) != self._last_error:
                log.error("no frame: %s", exc)
            self._last_error = str(exc)
            return False
        if self._last_error is not None:
            log.info("frames are back")
            self._last_error = None
        info = self._client.publish(self.topic, frame, qos=self.qos, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish failed: %s", mqtt.error_string(info.rc))
            return False
        self.published += 1
        log.debug("published a %d-byte frame to %s", len(frame), self.topic)
        return True
