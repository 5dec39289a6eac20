"""The ``mqtt`` publisher: each post as a JSON message on a topic, images beside it.

The post goes to ``topic`` (a template: ``{rule}`` and ``{gateway}`` are filled in,
e.g. ``things/{rule}/post``) as the same JSON object the webhook sends, plus a
``topic`` per image.  With ``images = "separate"`` each image is first published as
a binary message on ``<topic>/image/<n>``; with ``"omit"`` only its metadata travels.
A video is never sent as bytes: its entry carries ``path`` (and ``poster_path``), the
files on the gateway's disk.

The publisher has its own paho client (the ingest client stays subscribe-only),
connecting to the gateway's ``[mqtt]`` broker unless ``host`` is set.  It connects
in the delivery worker's thread (``prepare()``), never while the gateway starts.  A
publish counts once the broker acknowledged it (QoS 1/2) or it was written (QoS 0)
within ``timeout``; anything else is a RetryableError.  MQTT has no idempotency: a
retry after a lost acknowledgement can deliver a post twice, so the payload carries
``id`` and ``idempotency_key`` for subscribers to drop repeats.  A thread is one
message whose ``thread`` field lists every part (``text`` is the first).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from gateway.config.publishers import MqttConfig
from gateway.model import MediaItem, Post, Receipt, RetryableError, VideoLimits
from gateway.publishers.base import (
    BrokerSettings,
    Capabilities,
    OneMessageThread,
    PublisherContext,
    fill_post_template,
)
from gateway.publishers.payload import post_payload

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)


def build(config: MqttConfig, ctx: PublisherContext) -> MqttPublisher:
    """Create the publisher for this config (it connects later, in its worker)."""
    client_id = config.client_id or f"{ctx.gateway_name}-{config.id}"
    return MqttPublisher(config, config.broker(ctx.broker), client_id, ctx.gateway_name)


class MqttPublisher(OneMessageThread):
    """Sends each post's images, then its JSON, and waits for the broker to confirm."""

    def __init__(
        self, config: MqttConfig, broker: BrokerSettings, client_id: str, gateway: str
    ) -> None:
        self.id = config.id
        self.capabilities = Capabilities(
            max_images=config.max_images, supports_language=True, video=VideoLimits()
        )
        self._config = config
        self._broker = broker
        self._client_id = client_id
        self._gateway = gateway
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._refused: str | None = None

    # -- connection ------------------------------------------------------------

    def prepare(self) -> None:
        """Start connecting (in the background; paho reconnects by itself)."""
        if self._client is not None:
            return
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        version = paho.MQTTv5 if self._broker.protocol == 5 else paho.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=version
        )
        if self._broker.username is not None:
            client.username_pw_set(self._broker.username, self._broker.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(1, 30)
        client.connect_async(self._broker.host, self._broker.port, self._broker.keepalive)
        client.loop_start()
        self._client = client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = str(reason)
            log.warning("%s: broker refused the connection: %s", self.id, reason)
            return
        self._refused = None
        self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()

    def _connected_client(self) -> paho.Client:
        self.prepare()
        assert self._client is not None
        if not self._connected.wait(self._config.timeout):
            why = f" ({self._refused})" if self._refused else ""
            raise RetryableError(
                f"mqtt: not connected to {self._broker.host}:{self._broker.port}{why}"
            )
        return self._client

    # -- publishing ----------------------------------------------------------------

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Publish a whole thread as one message (``text`` = part 1, ``thread`` = all)."""
        client = self._connected_client()
        topic = fill_post_template(self._config.topic, post, self._gateway)
        payload = post_payload(post, parts[0], media, idempotency_key, self._gateway, parts)
        separate = self._config.images == "separate"
        for n, (entry, item) in enumerate(zip(payload["media"], media, strict=True)):
            if item.is_video:
                add_video_paths(entry, item)
            elif separate:
                entry["topic"] = f"{topic}/image/{n}"
                self._send(client, entry["topic"], item.path.read_bytes())
        self._send(client, topic, json.dumps(payload, ensure_ascii=False).encode())
        return Receipt(
            remote_id=post.id, url=f"mqtt://{self._broker.host}:{self._broker.port}/{topic}"
        )

    def _send(self, client: paho.Client, topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=self._config.qos, retain=self._config.retain)
        try:
            info.wait_for_publish(self._config.timeout)
        except (RuntimeError, ValueError) as exc:
            raise RetryableError(f"mqtt: publish to {topic} failed: {exc}") from None
        if not info.is_published():
            raise RetryableError(f"mqtt: broker did not confirm {topic} in time")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


def add_video_paths(entry: dict[str, Any], item: MediaItem) -> None:
    """A video travels as its file's path (and its poster's), never as bytes: a broker
    and its subscribers are not made for megabytes of MP4 in one message."""
    entry["path"] = str(item.path.resolve())
    if item.poster is not None:
        entry["poster_path"] = str(item.poster.resolve())


__all__ = ["MqttConfig", "MqttPublisher", "build"]
