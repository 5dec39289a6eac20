"""The publisher contract: what every backend declares and implements.

A backend is one module holding a pydantic config class (keyed by
``type: Literal["..."]``) and a class that satisfies :class:`Publisher`.
Composition fits text and images to :class:`Capabilities` before calling
``publish``; a publisher never truncates on its own.
"""

from __future__ import annotations

import importlib.util
import string
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from gateway.config.sections import TABLE_CONFIG
from gateway.config.durations import Duration
from gateway.model import MediaItem, Post, Receipt

TextCounting = Literal["chars", "graphemes", "weighted", "bytes"]
"""How a service counts the length of a post's text."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a publisher accepts; composition fits every post to these limits."""

    text_counting: TextCounting = "chars"
    max_text: int | None = None
    """Longest text allowed, in units of ``text_counting``; ``None`` for no limit."""
    max_text_bytes: int | None = None
    """A UTF-8 byte limit on top of ``max_text`` (Bluesky has both)."""
    url_length: int | None = None
    """Length every URL counts as, when the service shortens links."""
    max_images: int = 4
    max_image_bytes: int | None = None
    max_image_pixels: int | None = None
    max_image_side: int | None = None
    max_alt_text: int | None = None
    supports_language: bool = False


class PublisherConfig(BaseModel):
    """Fields every publisher config shares."""

    model_config = TABLE_CONFIG

    id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}\Z",
        description="Name rules use in `publish_to`; also the outbox key.",
    )
    enabled: bool = Field(
        default=True, description="Set false to keep the config but post nothing."
    )
    max_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Give a delivery up (`dead`) after this many failed attempts.",
    )
    give_up_after: Duration = Field(
        default=timedelta(days=3),
        description="Give a delivery up (`dead`) when it fails and its post is older than this.",
    )
    max_per_day: int | None = Field(
        default=None,
        ge=1,
        description="Posting budget: at most this many posts sent per day (local midnight to "
        "midnight in the gateway's time zone); more wait for the next day.",
    )
    min_interval: Duration | None = Field(
        default=None,
        description="Leave at least this long between two posts sent to this publisher.",
    )

    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(module, extra) pairs this backend imports when built, e.g. ("oauthlib", "x")."""

    def missing_dependencies(self) -> list[str]:
        """One message per optional dependency that is not installed."""
        return [
            f"needs the {module!r} package: pip install 'things-gateway[{extra}]'"
            for module, extra in self.requires
            if importlib.util.find_spec(module) is None
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


POST_TEMPLATE_FIELDS = frozenset({"rule", "gateway"})
"""The placeholders a publisher's own small templates (MQTT topic, Apprise title) may use."""


def check_post_template(template: str, what: str) -> str:
    """Validate a ``{rule}``/``{gateway}`` template (``what`` names it in errors)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad {what} template: {exc}") from None
    unknown = names - POST_TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)} in the {what}; use {{rule}} or {{gateway}}"
        )
    return template


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
class BrokerSettings:
    """How to reach an MQTT broker (the gateway's own ``[mqtt]`` broker by default)."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    protocol: int = 5
    keepalive: int = 60

    def __repr__(self) -> str:
        # Never show the password, even in a debugger or a log line.
        return f"BrokerSettings(host={self.host!r}, port={self.port}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class PublisherContext:
    """What the gateway hands a publisher when it is built."""

    state_dir: Path
    gateway_name: str
    store: KeyValueStore = field(default_factory=MemoryStore)
    """Durable storage for the publisher; keys should start with the publisher id."""
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    """The gateway's MQTT broker, the default for publishers that talk MQTT."""
