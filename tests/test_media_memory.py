"""A post's images take turns: one large image buffer at a time, whichever rule fires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from gateway.media.images import RENDER_LOCK
from gateway.model import Reading
from tests.mediautil import make_gateway, noisy_jpeg, scene_jpeg  # noqa: F401

CONFIG = """
[[sensors]]
id = "water_temp"
topic = "pool/temp"
unit = "°C"

[[cameras]]
id = "cam"
topic = "pool/cam"
max_age = "2h"

[[rules]]
id = "everything"
every = "1h"
text = "The pool"
images = [{ camera = "cam", caption = "{{ water_temp }}", alt = "The pool" }]
publish_to = ["small", "archive"]

[[rules.charts]]
sensor = "water_temp"
alt = "Water over 24 hours"

[rules.timelapse]
camera = "cam"
window = "24h"
frames = 8
alt = "The pool over the day"

[[publishers]]
id = "small"
type = "file"
path = "small"

[[publishers]]
id = "archive"
type = "file"
"""


def test_every_image_of_a_post_is_encoded_under_the_render_lock(
    make_gateway: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two rules rendering at once added their peaks (photo 14 MiB, chart 16 MiB) in the
    # soak bench; under one lock the daemon's peak is that of one image.
    gateway = make_gateway(CONFIG)
    gateway.publishers["small"].capabilities = gateway.publishers["small"].capabilities.__class__(
        max_image_bytes=60_000, max_image_side=400
    )
    gateway.runner.capabilities = {p: pub.capabilities for p, pub in gateway.publishers.items()}
    now = datetime.now(UTC)
    gateway.state.update(Reading("water_temp", 26.5, "°C", now, "pool/temp"))
    for k in range(8, 0, -1):
        at = now - timedelta(minutes=30 * k)
        gateway.state.set_frame(gateway.frames.store("cam", scene_jpeg(at, (320, 240)), at))
    gateway.state.set_frame(gateway.frames.store("cam", noisy_jpeg((1600, 1200)), now))

    saves: list[tuple[str, bool]] = []
    save = Image.Image.save

    def recording_save(self: Image.Image, fp: Any, format: str | None = None, **kw: Any) -> None:
        saves.append((str(format), RENDER_LOCK.locked()))
        save(self, fp, format, **kw)

    monkeypatch.setattr(Image.Image, "save", recording_save)
    post = gateway.fire("everything")

    assert post is not None
    assert sorted(m.mime for m in post.media) == ["image/jpeg", "image/png", "image/webp"]
    formats = {f for f, _ in saves}
    assert {"JPEG", "PNG", "WEBP"} <= formats  # photo (and the small copy), chart, timelapse
    assert all(locked for _, locked in saves), saves
    assert not RENDER_LOCK.locked()
