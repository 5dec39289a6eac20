"""Core value types shared by every part of the gateway.

They are frozen dataclasses: cheap to create in the MQTT thread, safe to hand
between threads, and easy to compare in tests.  Frames and rendered media stay on
disk; only their paths travel.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

Value = float | bool | str
"""What a sensor reading holds: a number, a flag, or a short piece of text."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded sensor value."""

    sensor: str
    value: Value
    unit: str
    at: datetime
    topic: str


@dataclass(frozen=True, slots=True)
class Frame:
    """A camera frame stored on disk."""

    camera: str
    path: Path
    at: datetime
    width: int
    height: int
    mime: str
    sha256: str


@dataclass(frozen=True, slots=True)
class MediaItem:
    """An image or video attached to a post, already rendered to a file."""

    path: Path
    mime: str
    width: int
    height: int
    bytes: int
    alt: str
    poster: Path | None = None
    """A video's poster frame (JPEG): previews, the archive, services that take no video."""
    duration: float | None = None
    """A video's length in seconds."""
    fps: float | None = None
    """A video's (constant) frame rate."""

    @property
    def is_video(self) -> bool:
        """True for a video (an MP4)."""
        return self.mime.startswith("video/")


@dataclass(frozen=True, slots=True)
class Post:
    """A composed status post, before it is fitted to any one publisher."""

    id: str
    rule: str
    created_at: datetime
    text: str
    media: tuple[MediaItem, ...] = ()
    lang: str | None = None
    reply: ReplyTarget | None = None
    """Set when the post answers a mention: which remote post it replies to."""


VISIBILITY_ORDER: tuple[str, ...] = ("direct", "private", "unlisted", "public")
"""Mastodon visibilities, narrowest first: a reply never goes wider than its mention."""


def narrower_visibility(configured: str, mention: str | None) -> str:
    """The narrower of a publisher's configured visibility and the mention's own."""
    if mention not in VISIBILITY_ORDER:
        return configured if mention is None else "direct"
    if configured not in VISIBILITY_ORDER:
        return mention
    return min(configured, mention, key=VISIBILITY_ORDER.index)


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """The remote post a reply answers, on the publisher the mention came from."""

    publisher: str
    remote_id: str
    visibility: str | None = None
    author: str = ""
    author_id: str = ""
    root_id: str = ""
    """Bluesky: the thread's root (``uri``); empty when the mention is the root."""

    def to_json(self) -> dict[str, str | None]:
        """A JSON-able dict (the outbox stores it with the post)."""
        return {
            "publisher": self.publisher,
            "remote_id": self.remote_id,
            "visibility": self.visibility,
            "author": self.author,
            "author_id": self.author_id,
            "root_id": self.root_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplyTarget:
        """The inverse of :meth:`to_json`."""
        return cls(
            publisher=str(data["publisher"]),
            remote_id=str(data["remote_id"]),
            visibility=data.get("visibility"),
            author=str(data.get("author") or ""),
            author_id=str(data.get("author_id") or ""),
            root_id=str(data.get("root_id") or ""),
        )


@dataclass(frozen=True, slots=True)
class Mention:
    """A post that mentions the gateway's account (or a question asked over MQTT)."""

    publisher: str
    remote_id: str
    author: str
    text: str
    created_at: datetime
    author_name: str = ""
    author_id: str = ""
    lang: str | None = None
    visibility: str | None = None
    in_reply_to: str | None = None
    root_id: str = ""
    bot: bool = False
    url: str | None = None

    def target(self) -> ReplyTarget:
        """Where a reply to this mention goes."""
        return ReplyTarget(
            self.publisher,
            self.remote_id,
            self.visibility,
            self.author,
            self.author_id,
            self.root_id,
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a publisher returns once a post is out: the remote id and a link."""

    remote_id: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """What a service takes as video; ``None`` is no limit."""

    max_bytes: int | None = None
    max_duration: float | None = None
    """Longest video, in seconds."""
    max_side: int | None = None
    max_fps: float | None = None
    max_pixels: int | None = None
    min_duration: float | None = None
    """Shortest video, in seconds (X refuses under 0.5 s)."""
    alone: bool = False
    """A post with a video carries nothing else (Mastodon, Bluesky and X: one video,
    or images); the video is kept and the images left out."""

    def admits(self, width: int, height: int, duration: float, size: int, fps: float) -> bool:
        """True when a video of these figures needs no re-encode."""
        return (
            (self.max_bytes is None or size <= self.max_bytes)
            and (self.max_duration is None or duration <= self.max_duration + 1e-6)
            and (self.min_duration is None or duration >= self.min_duration - 1e-6)
            and (self.max_side is None or max(width, height) <= self.max_side)
            and (self.max_fps is None or fps <= self.max_fps + 1e-6)
            and (self.max_pixels is None or width * height <= self.max_pixels)
        )


TextCounting = Literal["chars", "graphemes", "weighted", "bytes"]
"""How a service counts the length of a post's text."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a publisher accepts (its declared limits); composition fits every post to these."""

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
    video: VideoLimits | None = None
    """The service's video limits; ``None``: it takes no video (it gets the poster frame)."""


class PublishError(Exception):
    """Base class of the errors a publisher may raise."""


class RetryableError(PublishError):
    """The post may go through later (network down, 5xx, rate limited)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """A service's cap is used up (a daily limit, a rate-limit window): try again after
    ``retry_after`` seconds.  Waiting for a cap is no failed attempt: it does not count
    toward ``max_attempts`` (``give_up_after`` still applies)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.wait = retry_after


class PublisherPausedError(PublishError):
    """The publisher cannot post until its config changes (a revoked credential).

    Its deliveries keep waiting (within ``give_up_after``), no attempt counted, until
    a reload brings a new credential.
    """


class PermanentError(PublishError):
    """Trying again cannot help (bad credentials, rejected content)."""


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass
class _IdState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_ms: int = 0
    last_rand: int = 0


_ID_STATE = _IdState()


def new_post_id(now_ms: int | None = None) -> str:
    """Return a 26-character ULID: unique, and sortable by creation time.

    Within one millisecond the random part is incremented, so ids made by this
    process are strictly increasing (even if the clock steps back).
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _ID_STATE.lock:
        if ms <= _ID_STATE.last_ms:
            ms = _ID_STATE.last_ms
            rand = _ID_STATE.last_rand + 1
        else:
            # The low 10 bits start at zero and count the ids made within this
            # millisecond, so keys derived from them (Bluesky's TID clock id) stay
            # ordered instead of wrapping.
            rand = (int.from_bytes(os.urandom(10), "big") >> 1) & ~0x3FF
        _ID_STATE.last_ms, _ID_STATE.last_rand = ms, rand
    number = (ms << 80) | (rand & ((1 << 80) - 1))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[number & 31])
        number >>= 5
    return "".join(reversed(chars))
