"""A video is streamed from disk to the services that take its bytes (webhook
multipart, signed; Mastodon's media upload; Bluesky's uploadBlob), never read into
memory: a child process publishes a 40 MB MP4 to each local fake and reports how much
its peak RSS grew, and the fake checks every byte arrived."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.model import MediaItem
from gateway.publishers.webhook import sign
from tests.fakes.bluesky import FakePds
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.media import mp4
from tests.fakes.webhook import FakeWebhook
from tests.test_publisher_mastodon import TOKEN

ROOT = Path(__file__).resolve().parent.parent
PADDING = 40_000_000
MAX_GROWTH_MB = 15
"""Peak RSS growth allowed while publishing: the old code held the file twice (80 MB)."""

PUBLISH = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from pydantic import TypeAdapter
    from gateway.config.publishers import AnyPublisherConfig
    from gateway.model import MediaItem, Post, new_post_id
    from gateway.publishers import build_publisher
    from gateway.publishers.base import MemoryStore, PublisherContext

    spec = json.loads(sys.argv[1])
    config = TypeAdapter(AnyPublisherConfig).validate_python(spec["config"])
    item = MediaItem(
        Path(spec["path"]), "video/mp4", 160, 90, spec["bytes"], "The pool",
        poster=Path(spec["poster"]), duration=3.0, fps=4.0,
    )
    post = Post(new_post_id(), "daily", datetime.now(UTC), "Today", (item,), "en")
    ctx = PublisherContext(Path(spec["state"]), "pool", store=MemoryStore())
    publisher = build_publisher(config, ctx)
    publisher.publish(post, "warm-up", (), "warm-up")  # connections, TLS, imports
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    publisher.publish(post, "Today", (item,), "k1")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    publisher.close()
    print((after - before) / 1024)
    """
)


def big_mp4(tmp_path: Path) -> MediaItem:
    """A real MP4 made 40 MB larger by a ``free`` box (which players skip)."""
    item = mp4(tmp_path, "lapse.mp4", "The pool")
    with item.path.open("ab") as fh:
        fh.write(struct.pack(">I4s", PADDING + 8, b"free"))
        chunk = bytes(range(256)) * 4096
        for _ in range(PADDING // len(chunk)):
            fh.write(chunk)
        fh.write(bytes(PADDING % len(chunk)))
    return replace(item, bytes=item.path.stat().st_size)


def publish_in_child(config: dict[str, Any], item: MediaItem, tmp_path: Path) -> float:
    """Publish ``item`` with a publisher built from ``config`` in a fresh interpreter;
    return how many MB its peak RSS grew while publishing."""
    spec = {
        "config": config,
        "path": str(item.path),
        "poster": str(item.poster),
        "bytes": item.bytes,
        "state": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", PUBLISH, json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return float(result.stdout.split()[-1])


def test_webhook_multipart_is_streamed_and_signed(tmp_path: Path) -> None:
    item = big_mp4(tmp_path)
    with FakeWebhook() as hook:
        config = {
            "id": "hook",
            "type": "webhook",
            "url": f"{hook.url}/hooks/in",
            "format": "multipart",
            "secret": "hook-secret-1",
        }
        grew = publish_in_child(config, item, tmp_path)
        sent = hook.calls("/hooks/in", "POST")[-1]
    assert grew < MAX_GROWTH_MB, f"peak RSS grew {grew:.0f} MB"
    assert sent.part("media").data == item.path.read_bytes()
    assert item.poster is not None
    assert sent.part("poster").data == item.poster.read_bytes()
    assert json.loads(sent.part("payload").data)["text"] == "Today"
    from pydantic import SecretStr

    assert sent.header("x-signature-256") == sign(SecretStr("hook-secret-1"), sent.body)
    assert sent.header("transfer-encoding") is None
    assert sent.header("content-length") == str(len(sent.body))


@pytest.mark.parametrize("service", ["mastodon", "bluesky"])
def test_uploads_to_services_are_streamed(service: str, tmp_path: Path) -> None:
    item = big_mp4(tmp_path)
    received: Callable[[], bytes]
    if service == "mastodon":
        fake: Any = FakeMastodon(TOKEN)
        config = {
            "id": "masto",
            "type": "mastodon",
            "base_url": "",
            "access_token": TOKEN,
            "media_poll_interval": 0.01,
        }

        def received() -> bytes:
            (upload,) = fake.calls("/api/v2/media")
            assert item.poster is not None
            assert upload.part("thumbnail").data == item.poster.read_bytes()
            assert upload.part("description").text == "The pool"
            return bytes(upload.part("file").data)
    else:
        fake = FakePds("poolcam.test", "app-pass-1234")
        config = {
            "id": "sky",
            "type": "bluesky",
            "handle": "poolcam.test",
            "app_password": "app-pass-1234",
        }

        def received() -> bytes:
            (upload,) = [r for r in fake.requests if r.path.endswith("uploadBlob")]
            assert upload.header("transfer-encoding") is None
            assert upload.header("content-length") == str(item.bytes)
            return bytes(upload.body)

    with fake:
        config["base_url" if service == "mastodon" else "service"] = fake.url
        grew = publish_in_child(config, item, tmp_path)
        data = received()
    assert grew < MAX_GROWTH_MB, f"peak RSS grew {grew:.0f} MB"
    assert data == item.path.read_bytes()
