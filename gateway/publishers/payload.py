"""The post as one JSON object: what the webhook and MQTT backends send.

Both send the same fields so a subscriber can move from one transport to the other:
``id``, ``rule``, ``created_at``, ``text``, ``lang``, ``gateway``,
``idempotency_key``, ``media`` (a list of ``{filename, mime, width, height, bytes,
alt}``; a video's entry adds ``duration`` in seconds and ``poster``, its poster
frame's filename) and, for a thread of several parts, ``thread``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.model import MediaItem, Post


def post_payload(
    post: Post,
    text: str,
    media: tuple[MediaItem, ...],
    idempotency_key: str,
    gateway: str,
    thread: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON object sent for one post; ``thread`` only when it has several parts."""
    payload: dict[str, Any] = {
        "id": post.id,
        "rule": post.rule,
        "created_at": post.created_at.isoformat(),
        "text": text,
        "lang": post.lang,
        "gateway": gateway,
        "idempotency_key": idempotency_key,
        "media": [media_entry(post.id, n, item) for n, item in enumerate(media)],
    }
    if len(thread) > 1:
        payload["thread"] = list(thread)
    return payload


def media_entry(post_id: str, n: int, item: MediaItem) -> dict[str, Any]:
    """One ``media`` entry of the payload (a video's adds ``duration`` and ``poster``)."""
    entry: dict[str, Any] = {
        "filename": f"{post_id}-{n}{item.path.suffix or '.bin'}",
        "mime": item.mime,
        "width": item.width,
        "height": item.height,
        "bytes": item.bytes,
        "alt": item.alt,
    }
    if item.is_video:
        entry["duration"] = item.duration
        if item.poster is not None:
            entry["poster"] = f"{post_id}-{n}.poster.jpg"
    return entry
