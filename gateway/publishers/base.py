"""The publisher contract: what every backend declares and implements.

A backend is one module, ``gateway/publishers/<type>.py``, holding a class that
satisfies :class:`Publisher` and a ``build(config, ctx)`` function; its config class
(keyed by ``type: Literal["..."]``) lives in :mod:`gateway.config.publishers`.
Composition fits text and images to :class:`Capabilities` before calling
``publish``; a publisher never truncates on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from gateway.config.publishers import BrokerSettings, PublisherConfig
from gateway.model import Capabilities, MediaItem, Post, Receipt, TextCounting

__all__ = [
    "BrokerSettings",
    "Capabilities",
    "KeyValueStore",
    "LiveCapabilities",
    "MemoryStore",
    "OneMessageThread",
    "Publisher",
    "PublisherConfig",
    "PublisherContext",
    "TextCounting",
    "fill_post_template",
]


@runtime_checkable
class Publisher(Protocol):
    """A backend that can send one post.

    A publisher may also define ``prepare()``: the delivery worker calls it once, in
    its own thread, when it starts, so network set-up (a server's limits, a broker
    connection) never delays the gateway's start.  Building a publisher must not
    touch the network.

    A publisher may also define ``publish_thread(post, parts, media, idempotency_key)
    -> Receipt`` to post the numbered parts of a thread (``overflow = "thread"``) as it
    sees fit: replies, one message, one archive record.  Media go with the first part
    and the receipt is the first part's.  Without it, each part is published on its
    own (see :mod:`gateway.publishers.threads`).
    """

    id: str
    capabilities: Capabilities

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        """Send ``text`` (already fitted) and ``media``; raise RetryableError/PermanentError."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def fill_post_template(template: str, post: Post, gateway: str) -> str:
    """A template checked by :func:`check_post_template`, filled in for one post."""
    return template.format(rule=post.rule, gateway=gateway)


class OneMessageThread(ABC):
    """For backends that send a whole thread as one message (console, archive, webhook...).

    ``publish`` is a one-part thread; the subclass implements ``publish_thread``.
    """

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        """Send one post: a thread of one part."""
        return self.publish_thread(post, (text,), media, idempotency_key)

    @abstractmethod
    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Send every part of a thread in one message."""


class LiveCapabilities(Mapping[str, Capabilities]):
    """Each publisher's *current* capabilities, read at every lookup.

    Limits can change while the gateway runs (Mastodon's come from the server, after
    start), so composition looks them up per post instead of keeping a snapshot.
    """

    def __init__(self, publishers: Mapping[str, Publisher]) -> None:
        self._publishers = publishers

    def __getitem__(self, publisher_id: str) -> Capabilities:
        return self._publishers[publisher_id].capabilities

    def __iter__(self) -> Iterator[str]:
        return iter(self._publishers)

    def __len__(self) -> int:
        return len(self._publishers)


class KeyValueStore(Protocol):
    """Small durable key/value storage in the gateway's SQLite (sessions, cached limits)."""

    def get(self, key: str) -> str | None:
        """The stored value, or None."""
        ...

    def set(self, key: str, value: str) -> None:
        """Store (and commit) a value."""
        ...


class MemoryStore:
    """A KeyValueStore kept in memory, for tests and previews."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        """The stored value, or None."""
        return self._data.get(key)

    def set(self, key: str, value: str) -> None:
        """Store a value."""
        self._data[key] = value


@dataclass(frozen=True, slots=True)
class PublisherContext:
    """What the gateway hands a publisher when it is built."""

    state_dir: Path
    gateway_name: str
    store: KeyValueStore = field(default_factory=MemoryStore)
    """Durable storage for the publisher; keys should start with the publisher id."""
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    """The gateway's MQTT broker, the default for publishers that talk MQTT."""
