"""The ``file`` publisher: the local archive of posts, as JSON lines plus media files.

Layout (a contract, see DESIGN.md)::

    <state_dir>/<path>/posts.jsonl      one JSON object per post
    <state_dir>/<path>/media/<file>     images referenced by ``media[].file``

A video (MP4) entry also has ``duration`` (seconds) and ``poster`` (its JPEG poster
frame, ``media/<post id>-<n>.poster.jpg``).

A thread (``overflow = "thread"``) is one record: ``text`` is its first part and an
extra ``thread`` field lists every part, in order; single posts have no ``thread``.

Writing the same post id twice never makes a second line, so a delivery retried
after a crash is harmless.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config.publishers import FileConfig
from gateway.model import MediaItem, Post, Receipt, VideoLimits
from gateway.publishers.base import (
    Capabilities,
    OneMessageThread,
    PublisherContext,
)
from gateway.publishers.payload import media_entry
from gateway.publishers.site import SiteBuilder
from gateway.support.files import atomic_copy, fsync_dir

ARCHIVE_NAME = "posts.jsonl"
_log = logging.getLogger(__name__)


def build(config: FileConfig, ctx: PublisherContext) -> FilePublisher:
    """Create the publisher a ``file`` config entry describes."""
    folder = Path(config.path)
    if not folder.is_absolute():
        folder = ctx.state_dir / folder
    site = None
    if config.site:
        title = config.site_title or ctx.gateway_name
        site = SiteBuilder(folder, title=title, per_page=config.per_page, base_url=config.site_url)
    return FilePublisher(config.id, folder, site=site)


class FilePublisher(OneMessageThread):
    """Appends posts to ``posts.jsonl``; idempotent by post id."""

    capabilities = Capabilities(max_images=16, video=VideoLimits())
    """Any image, any video: the archive keeps the masters (a video with its poster)."""

    def __init__(self, publisher_id: str, folder: Path, site: SiteBuilder | None = None) -> None:
        self.id = publisher_id
        self.folder = folder
        self.archive = folder / ARCHIVE_NAME
        self.site = site
        self._lock = threading.Lock()
        self._ids: set[str] | None = None

    def _known_ids(self) -> set[str]:
        if self._ids is None:
            records = read_archive(self.archive)
            self._ids = {r["id"] for r in records}
            if self.site is not None:
                # once per start: the site catches up with the archive if it fell behind
                self.site.sync(records)
        return self._ids

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Archive a whole thread as one record (``text`` = part 1, ``thread`` = all)."""
        with self._lock:
            (self.folder / "media").mkdir(parents=True, exist_ok=True)
            if post.id in self._known_ids():
                return Receipt(remote_id=post.id, url=self.archive.as_uri())
            entries = [self._store_media(post.id, n, item) for n, item in enumerate(media)]
            record = archive_record(post, parts[0], entries, parts)
            self._append(json.dumps(record, ensure_ascii=False))
            self._known_ids().add(post.id)
            if self.site is not None:
                try:
                    self.site.add(record)
                except OSError as exc:  # the archive has the post; the next start rebuilds
                    _log.warning("site not updated for post %s: %s", post.id, exc)
        return Receipt(remote_id=post.id, url=self.archive.as_uri())

    def _store_media(self, post_id: str, n: int, item: MediaItem) -> dict[str, Any]:
        entry = media_entry(post_id, n, item)
        name = entry.pop("filename")
        atomic_copy(item.path, self.folder / "media" / name)
        poster = entry.pop("poster", None)
        if poster is not None and item.poster is not None and item.poster.exists():
            atomic_copy(item.poster, self.folder / "media" / poster)
            entry["poster"] = f"media/{poster}"
        return {"file": f"media/{name}", **entry}

    def _append(self, line: str) -> None:
        new_file = not self.archive.exists()
        with open(self.archive, "a+b") as fh:
            # A power cut can leave a partial last line; start ours on a fresh one.
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if new_file:
            fsync_dir(self.folder)

    def close(self) -> None:
        """Nothing to release: every write is already on disk."""


def archive_record(
    post: Post,
    text: str,
    media: list[dict[str, Any]],
    thread: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON object stored for one post (DESIGN.md's archive contract).

    ``thread`` (every part of a thread, ``text`` being the first) is added only when
    there is more than one part, so readers of single posts see the same record as ever.
    """
    record: dict[str, Any] = {
        "id": post.id,
        "rule": post.rule,
        "created_at": post.created_at.isoformat(),
        "text": text,
        "lang": post.lang,
        "media": media,
    }
    if len(thread) > 1:
        record["thread"] = list(thread)
    return record


def read_archive(path: Path) -> list[dict[str, Any]]:
    """Every well-formed record of an archive, oldest first; torn lines are skipped."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                records.append(record)
    return records


def read_archive_ids(path: Path) -> list[str]:
    """The ids of every archived post."""
    return [r["id"] for r in read_archive(path)]


__all__ = ["FileConfig", "FilePublisher", "archive_record", "build", "read_archive"]
