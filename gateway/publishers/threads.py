"""Threads: posting the numbered parts of one post as a chain of replies.

Rules with ``overflow = "thread"`` split a text too long for a publisher into parts
(``Delivery.parts``).  The delivery worker hands them to :func:`publish_thread`,
which calls the publisher's own ``publish_thread`` when it has one, else posts the
parts one by one through ``publish`` (:func:`publish_parts_one_by_one`).

Crash-resume: a service thread is several network calls, and the gateway may stop
between two of them.  :class:`ThreadLog` records each part's remote id in the
publisher's durable store (``<publisher>:thread:<post id>:<n>``) as soon as it is
posted, so a retried delivery skips the parts already out and replies to the last
one instead of starting the thread again.

Idempotency keys: part 1 uses the delivery's key (the same one a single post
uses), part ``n`` uses ``<key>-<n>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from gateway.model import MediaItem, Post, Receipt
from gateway.publishers.base import KeyValueStore, Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PostedPart:
    """One part of a thread as the service knows it."""

    remote_id: str | None
    url: str | None = None
    cid: str | None = None
    """A content hash the service needs to reply to the part (Bluesky)."""

    @property
    def receipt(self) -> Receipt:
        """The part as a receipt."""
        return Receipt(remote_id=self.remote_id, url=self.url)


class ThreadLog:
    """Which parts of one post's thread a publisher has posted, in its durable store."""

    def __init__(self, store: KeyValueStore, publisher_id: str, post_id: str) -> None:
        self._store = store
        self._prefix = f"{publisher_id}:thread:{post_id}"

    def key(self, n: int) -> str:
        """The store key of part ``n`` (1-based)."""
        return f"{self._prefix}:{n}"

    def get(self, n: int) -> PostedPart | None:
        """Part ``n`` if it was posted and recorded, else None."""
        stored = self._store.get(self.key(n))
        if not stored:
            return None
        try:
            return PostedPart(**json.loads(stored))
        except (TypeError, ValueError):
            log.warning("ignoring unreadable thread record %s", self.key(n))
            return None

    def record(self, n: int, part: PostedPart) -> None:
        """Remember that part ``n`` is out (committed before the next part is sent)."""
        self._store.set(self.key(n), json.dumps(asdict(part)))


PostPart = Callable[[int, str, list[PostedPart]], PostedPart]
"""``(n, text, earlier parts) -> the posted part``; n is 1-based."""


def post_parts(parts: Sequence[str], thread_log: ThreadLog, post_part: PostPart) -> Receipt:
    """Post every part not yet recorded, in order; the receipt is the first part's."""
    posted: list[PostedPart] = []
    for n, text in enumerate(parts, start=1):
        done = thread_log.get(n)
        if done is None:
            done = post_part(n, text, posted)
            thread_log.record(n, done)
        else:
            log.info("%s already posted; continuing the thread", thread_log.key(n))
        posted.append(done)
    return posted[0].receipt


def part_key(idempotency_key: str, n: int) -> str:
    """The idempotency key of part ``n``: the delivery's own for part 1."""
    return idempotency_key if n == 1 else f"{idempotency_key}-{n}"


def publish_thread(
    publisher: Publisher,
    post: Post,
    parts: Sequence[str],
    media: tuple[MediaItem, ...],
    idempotency_key: str,
) -> Receipt:
    """Send a thread through ``publisher``: its ``publish_thread`` if it has one."""
    method: Callable[..., Receipt] | None = getattr(publisher, "publish_thread", None)
    if method is not None:
        return method(post, tuple(parts), media, idempotency_key)
    return publish_parts_one_by_one(publisher, post, parts, media, idempotency_key)


def publish_parts_one_by_one(
    publisher: Publisher,
    post: Post,
    parts: Sequence[str],
    media: tuple[MediaItem, ...],
    idempotency_key: str,
) -> Receipt:
    """The default for publishers without threads: each part as its own post.

    Media go with the first part only; each part has its own idempotency key.  With no
    store to resume from, a retry sends every part again (under the same keys).
    """
    receipts = [
        publisher.publish(post, text, media if n == 1 else (), part_key(idempotency_key, n))
        for n, text in enumerate(parts, start=1)
    ]
    return receipts[0]


__all__ = [
    "PostedPart",
    "ThreadLog",
    "part_key",
    "post_parts",
    "publish_parts_one_by_one",
    "publish_thread",
]
