"""Helpers of the site tests: a real file publisher with a site, real JPEG posts."""

from __future__ import annotations

import http.client
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.model import MediaItem, Post
from gateway.publishers.file import FilePublisher
from gateway.publishers.site import SiteBuilder
from tests.mediautil import scene_jpeg

START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"
ARABIC = "درجة حرارة المسبح ٢٤ درجة"


def site_publisher(folder: Path, per_page: int = 3) -> FilePublisher:
    """A ``file`` publisher keeping a site, as ``site = true`` builds it."""
    return FilePublisher(
        "archive", folder, site=SiteBuilder(folder, title="Pool", per_page=per_page)
    )


def jpeg_item(tmp: Path, n: int) -> MediaItem:
    """A real JPEG on disk with alt text."""
    path = tmp / f"frame-{n}.jpg"
    data = scene_jpeg(size=(320, 240))
    path.write_bytes(data)
    return MediaItem(path, "image/jpeg", 320, 240, len(data), f"The pool, frame {n}")


def post(n: int, text: str, media: tuple[MediaItem, ...] = (), lang: str = "en") -> Post:
    """Post number ``n``, a minute after the one before."""
    return Post(f"post{n:05d}", "poolcam", START + timedelta(minutes=n), text, media, lang)


def publish(pub: FilePublisher, p: Post) -> None:
    """Archive one post as a delivery would."""
    pub.publish_thread(p, (p.text,), p.media, p.id)


def raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` exactly as given (no client-side normalising of ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
