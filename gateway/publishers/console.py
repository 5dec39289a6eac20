"""The ``console`` publisher: prints each post to standard output."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from gateway.config.publishers import ConsoleConfig
from gateway.model import MediaItem, Post, Receipt
from gateway.publishers.base import (
    Capabilities,
    OneMessageThread,
    PublisherContext,
)


def build(config: ConsoleConfig, ctx: PublisherContext) -> ConsolePublisher:
    """Create the publisher a ``console`` config entry describes."""
    return ConsolePublisher(config)


class ConsolePublisher(OneMessageThread):
    """Writes posts to a text stream, one block per post."""

    capabilities = Capabilities(max_images=16)

    def __init__(self, config: ConsoleConfig, stream: TextIO | None = None) -> None:
        self.id = config.id
        self._config = config
        self._stream = stream
        self._lock = threading.Lock()

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Print every part of a thread in one block, a blank line between parts."""
        stream = self._stream or sys.stdout
        lines = [f"── {post.rule} · {post.created_at.isoformat(timespec='seconds')} ──"]
        lines.append("\n\n".join(parts))
        if self._config.show_media:
            lines += [f"  [image {m.width}x{m.height}] {m.path} — {m.alt}" for m in media]
        with self._lock:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        return Receipt(remote_id=post.id)

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["ConsoleConfig", "ConsolePublisher", "build"]
