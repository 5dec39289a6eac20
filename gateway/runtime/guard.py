"""Keeping the gateway's retained messages true on a broker other clients share.

Any client allowed to publish on the gateway's topics can write a retained
``offline`` to its status topic (Home Assistant then shows it unavailable while it
runs) or delete its discovery configs (an empty retained message).  The gateway
subscribes to those topics on its own connection and, when one holds anything but
what it published, publishes its own again: at most once a second per topic (two
clients fighting must not flood the broker), counted and logged once a minute.
Broker ACLs stop this at the source: ``config/mosquitto-acl.example``.

Runs in paho's network thread (the ingest's extra-topic hook): no I/O but a
queued publish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from gateway.config import GatewayConfig
from gateway.ingest.mqtt import status_topic
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

REASSERT_EVERY = 1.0
"""Seconds between two re-publications of one topic, however often it is changed."""

Publish = Callable[..., bool]


class RetainedGuard:
    """Re-publishes the gateway's retained status and discovery configs when changed."""

    def __init__(
        self,
        config: GatewayConfig,
        retained: Iterable[tuple[str, str]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Watch the status topic and each ``(topic, payload)`` of ``retained``
        (the Home Assistant discovery configs, given by the daemon)."""
        self.expected: dict[str, bytes] = {status_topic(config): b"online"}
        self.expected.update((topic, payload.encode()) for topic, payload in retained)
        self.publish: Publish | None = None
        """The ingest's ``publish``, set once the connection exists."""
        self.stopping = False
        """Set before the gateway writes ``offline`` itself: nothing is re-asserted then."""
        self.reasserted = 0
        self._armed: set[str] = set()
        """Topics whose own value has come back since the connection began: what
        arrives before it is history (the last run's own ``offline``, queued for a
        persistent session or retained), and the gateway's publish follows it anyway."""
        self.connection: Callable[[], int] | None = None
        """The ingest's connection count: a new connection re-arms nothing until each
        topic's own value is back (the broker's LWT ``offline`` comes first)."""
        self._connection = -1
        self._last: dict[str, float] = {}
        self._clock = clock
        self._ratelog = RateLimitedLog(log)

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics to watch (subscribed on the gateway's own connection)."""
        return tuple(self.expected)

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on a watched topic: re-publish ours if it is not what we wrote."""
        wanted = self.expected.get(topic)
        if wanted is None or self.stopping or self.publish is None:
            return
        connection = self.connection() if self.connection is not None else 0
        if connection != self._connection:
            self._connection = connection
            self._armed.clear()
        if payload == wanted:
            self._armed.add(topic)
            return
        if topic not in self._armed:
            return
        now = self._clock()
        if now - self._last.get(topic, float("-inf")) < REASSERT_EVERY:
            return
        self._last[topic] = now
        self.reasserted += 1
        self._ratelog.warning(
            f"reassert:{topic}",
            "retained %s was %s by another client; publishing the gateway's own again"
            " (%d times so far; see config/mosquitto-acl.example)",
            topic,
            "deleted" if not payload else "changed",
            self.reasserted,
        )
        self.publish(topic, wanted, qos=1, retain=True)
