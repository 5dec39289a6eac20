"""Simulated site: a pool thermometer, a Tasmota weather sensor, a river gauge and a camera.

Publishes to an MQTT broker, under ``<prefix>/``:

- ``pool/temperature``: plain number text, e.g. ``24.31`` (°C, a daily sine around 25);
- ``weather/SENSOR``: Tasmota JSON,
  ``{"Time": "...", "AM2301": {"Temperature": 18.2, "Humidity": 61.0}, "TempUnit": "C"}``;
- ``river/level``: JSON ``{"level_cm": 143.2, "battery": 97}`` (a slow random walk);
- ``cam/pool``: a 640x480 JPEG, retained (like Frigate snapshots).

That is the ``pool`` scenario (the default); ``plant`` and ``bridge`` publish other
topics (see :mod:`devices.scenarios`).  The demo config and ``config/examples/``
depend on these topics and payload shapes: change them deliberately.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import threading
import time
import uuid
from datetime import datetime
from functools import cache

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image, ImageDraw, ImageFont

from devices.scenarios import CAMERA_TOPICS, SCENARIOS, BridgeModel, Model, PlantModel

__all__ = ["SensorModel", "Simulator", "make_frame"]

log = logging.getLogger(__name__)

#: Bound on messages paho keeps queued while the broker is away; readings are
#: ephemeral, so a long outage must not grow memory on a small device.
MAX_QUEUED = 100


class SensorModel:
    """Plausible, slowly varying readings; pure apart from its seeded random generator."""

    def __init__(self, seed: int | None = None) -> None:
        """Start the random walks at typical values; ``seed`` makes the sequence repeatable."""
        self._rng = random.Random(seed)
        self._air_offset = self._rng.uniform(-1.0, 1.0)
        self._humidity_offset = self._rng.uniform(-5.0, 5.0)
        self._level_cm = self._rng.uniform(120.0, 160.0)
        self._battery = 100.0

    @staticmethod
    def _daily(at: datetime, peak_hour: float = 15.0) -> float:
        """-1..1 over the day, highest at ``peak_hour`` local time."""
        hour = at.hour + at.minute / 60 + at.second / 3600
        return math.cos(2 * math.pi * (hour - peak_hour) / 24)

    def pool_temperature(self, at: datetime) -> float:
        """Water temperature in °C: 25 ± 1.5 over the day, plus sensor noise."""
        return round(25.0 + 1.5 * self._daily(at, 16.0) + self._rng.gauss(0, 0.05), 2)

    def weather(self, at: datetime) -> tuple[float, float]:
        """Air temperature (°C) and relative humidity (%): humidity falls as it warms."""
        self._air_offset = _clamp(self._air_offset + self._rng.gauss(0, 0.05), -3.0, 3.0)
        self._humidity_offset = _clamp(self._humidity_offset + self._rng.gauss(0, 0.3), -15, 15)
        daily = self._daily(at)
        temperature = 15.0 + 5.0 * daily + self._air_offset
        humidity = _clamp(65.0 - 15.0 * daily + self._humidity_offset, 20.0, 100.0)
        return round(temperature, 1), round(humidity, 1)

    def river(self) -> tuple[float, int]:
        """River level (cm, a random walk within 50..400) and gauge battery (%)."""
        self._level_cm = _clamp(self._level_cm + self._rng.gauss(0, 0.4), 50.0, 400.0)
        # The battery drains slowly and is swapped when nearly flat.
        self._battery -= self._rng.uniform(0.0, 0.05)
        if self._battery < 5:
            self._battery = 100.0
        return round(self._level_cm, 1), round(self._battery)

    def messages(self, prefix: str, at: datetime) -> list[tuple[str, bytes]]:
        """One (topic, payload) per sensor for the reading taken at ``at`` (local time)."""
        air, humidity = self.weather(at)
        level, battery = self.river()
        tasmota = {
            "Time": at.replace(tzinfo=None).isoformat(timespec="seconds"),
            "AM2301": {"Temperature": air, "Humidity": humidity},
            "TempUnit": "C",
        }
        return [
            (f"{prefix}/pool/temperature", f"{self.pool_temperature(at):.2f}".encode()),
            (f"{prefix}/weather/SENSOR", json.dumps(tasmota).encode()),
            (f"{prefix}/river/level", json.dumps({"level_cm": level, "battery": battery}).encode()),
        ]


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType: small bitmap font
        return ImageFont.load_default()


def _gradient(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    top: tuple[int, int, int],
    bottom: tuple[int, int, int],
) -> None:
    x0, y0, x1, y1 = box
    span = max(1, y1 - y0)
    for y in range(y0, y1):
        t = (y - y0) / span
        color = (
            round(top[0] + (bottom[0] - top[0]) * t),
            round(top[1] + (bottom[1] - top[1]) * t),
            round(top[2] + (bottom[2] - top[2]) * t),
        )
        draw.line([(x0, y), (x1, y)], fill=color)


def make_frame(at: datetime, width: int = 640, height: int = 480) -> bytes:
    """Render a JPEG of a pool scene at ``at``: sky, water, a moving sun, swimmer and bubbles.

    Shapes move with ``at`` (the swimmer crosses the pool every minute), and the
    timestamp is drawn in the corner, so frames taken at different times differ.
    """
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    horizon = height * 2 // 5
    _gradient(draw, (0, 0, width, horizon), (110, 170, 235), (200, 225, 250))
    _gradient(draw, (0, horizon, width, height), (40, 150, 200), (5, 50, 110))

    seconds = at.hour * 3600 + at.minute * 60 + at.second + at.microsecond / 1e6
    sun_x = width * ((seconds / 86400) % 1.0)
    sun_r = height // 14
    draw.ellipse(
        [sun_x - sun_r, horizon // 3 - sun_r, sun_x + sun_r, horizon // 3 + sun_r],
        fill=(255, 220, 90),
    )

    swim = (seconds % 60) / 60
    sx = width * (0.1 + 0.8 * (swim if int(seconds // 60) % 2 == 0 else 1 - swim))
    sy = horizon + (height - horizon) * 0.45
    draw.ellipse(
        [sx - width // 16, sy - height // 40, sx + width // 16, sy + height // 40],
        fill=(230, 120, 60),
    )
    for i in range(5):
        bx = (sx + (i - 2) * width / 9) % width
        by = height - ((seconds * 40 + i * 73) % (height - horizon))
        r = 3 + i
        draw.ellipse([bx - r, by - r, bx + r, by + r], outline=(220, 240, 255), width=2)

    font = _font(max(12, height // 20))
    stamp = at.isoformat(sep=" ", timespec="seconds")
    left, top, right, bottom = draw.textbbox((10, 10), stamp, font=font)
    draw.rectangle([left - 5, top - 5, right + 5, bottom + 5], fill=(0, 0, 0))
    draw.text((10, 10), stamp, font=font, fill=(255, 255, 255))

    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


class Simulator:
    """Publishes :class:`SensorModel` readings and :func:`make_frame` frames to a broker.

    Readings go out every ``interval`` seconds and a camera frame every
    ``camera_interval`` seconds, from a background thread. paho reconnects on its
    own if the broker goes away; while disconnected, readings are skipped rather
    than queued. Publish failures are logged, never raised. A stopped simulator
    stays stopped: make a new one to publish again.

    Attributes:
        published: messages handed to the broker connection so far.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = "demo",
        interval: float = 2.0,
        camera_interval: float = 5.0,
        qos: int = 1,
        seed: int | None = None,
        protocol: int = 311,
        scenario: str = "pool",
    ) -> None:
        """Configure; nothing connects until :meth:`start`.

        Args:
            host: broker host.
            port: broker port.
            prefix: topic prefix (no trailing slash).
            interval: seconds between sensor readings.
            camera_interval: seconds between camera frames.
            qos: QoS for every publish (0, 1 or 2).
            seed: seed for repeatable readings.
            protocol: MQTT protocol version, 311 or 5.
            scenario: ``pool`` (default), ``plant`` or ``bridge``.
        """
        if interval <= 0 or camera_interval <= 0:
            raise ValueError("interval and camera_interval must be positive")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos}")
        if protocol not in (311, 5):
            raise ValueError(f"protocol must be 311 or 5, not {protocol}")
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, not {scenario}")
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        self.interval = interval
        self.camera_interval = camera_interval
        self.qos = qos
        self.protocol = protocol
        self.published = 0
        self.scenario = scenario
        self._model: Model = _model(scenario, seed)
        self._camera_topic = CAMERA_TOPICS[scenario]
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._failing = False

    def _make_client(self) -> mqtt.Client:
        version = mqtt.MQTTv5 if self.protocol == 5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"things-sim-{uuid.uuid4().hex[:8]}",
            protocol=version,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(MAX_QUEUED)
        return client

    def start(self) -> None:
        """Connect (in the background, retrying) and start publishing."""
        with self._lock:
            if self._thread is not None:
                return
            self._client = self._make_client()
            # connect_async + loop_start: a broker that is not up yet is retried, not fatal.
            self._client.connect_async(self.host, self.port, keepalive=30)
            self._client.loop_start()
            self._thread = threading.Thread(
                target=self._publish_loop, name=f"simulator-{self.prefix}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop publishing and disconnect cleanly; safe to call repeatedly."""
        self._stop_event.set()
        with self._lock:
            thread, self._thread = self._thread, None
            client, self._client = self._client, None
        if thread is not None:
            thread.join()
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def run(self, duration: float | None = None) -> None:
        """Publish until ``duration`` seconds pass (``None`` or 0: forever) or Ctrl-C."""
        self.start()
        try:
            self._stop_event.wait(duration or None)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _publish_loop(self) -> None:
        next_reading = next_frame = time.monotonic()
        while not self._stop_event.is_set():
            client = self._client
            if client is None:
                return
            now = time.monotonic()
            # While disconnected nothing is due-checked, so the first readings and frame
            # go out as soon as paho (re)connects.
            if client.is_connected():
                if now >= next_reading:
                    self._publish_readings(client)
                    next_reading = now + self.interval
                if now >= next_frame and self._camera_topic:
                    self._publish_frame(client, self._camera_topic)
                    next_frame = now + self.camera_interval
            wait = min(next_reading, next_frame) - time.monotonic()
            # Short waits so stop() and a (re)connection are noticed promptly.
            self._stop_event.wait(min(max(wait, 0.01), 0.1))

    def _publish_readings(self, client: mqtt.Client) -> None:
        for topic, payload in self._model.messages(self.prefix, datetime.now().astimezone()):
            self._publish(client, topic, payload, retain=False)

    def _publish_frame(self, client: mqtt.Client, suffix: str) -> None:
        try:
            frame = make_frame(datetime.now().astimezone())
        except (OSError, ValueError):
            log.exception("could not render a camera frame")
            return
        self._publish(client, f"{self.prefix}/{suffix}", frame, retain=True)

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes, *, retain: bool) -> None:
        try:
            info = client.publish(topic, payload, qos=self.qos, retain=retain)
            ok = info.rc == mqtt.MQTT_ERR_SUCCESS
        except (ValueError, OSError, RuntimeError) as exc:
            ok, info_text = False, str(exc)
        else:
            info_text = mqtt.error_string(info.rc)
        if ok:
            self.published += 1
            self._failing = False
        elif not self._failing:
            # Warn once per outage, not once per message.
            log.warning("publish to %s failed: %s", topic, info_text)
            self._failing = True


def _model(scenario: str, seed: int | None) -> Model:
    if scenario == "plant":
        return PlantModel(seed)
    if scenario == "bridge":
        return BridgeModel(seed)
    return SensorModel(seed)
