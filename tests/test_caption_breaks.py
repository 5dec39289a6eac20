"""Captions with odd line breaks and controls (issue 15, item 3): normalised before
layout; a caption that still cannot be drawn is left off and the post goes out."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from PIL import Image

from gateway.media.captions import Caption, draw_caption
from tests.gwutil import archive_posts
from tests.mediautil import deliver_all, make_gateway, scene_jpeg  # noqa: F401

BREAKS = ["\r", "\r\n", "\x1c", "\x1d", "\x1e", "\x85", "\u2029", "\u2028", "\x0c"]


@pytest.mark.parametrize("brk", BREAKS)
def test_odd_line_breaks_draw_like_a_newline(brk: str) -> None:
    base = Image.new("RGB", (480, 270), (40, 90, 160))
    expected = draw_caption(base.copy(), Caption("Pool\n21.5 °C", size=0.12))
    got = draw_caption(base.copy(), Caption(f"Pool{brk}21.5 °C", size=0.12))
    assert got.tobytes() == expected.tobytes()
    assert got.tobytes() != base.tobytes()


@pytest.mark.parametrize("control", ["\x00", "\x07", "\u202e", "\x9b"])
def test_controls_are_removed_before_layout(control: str) -> None:
    base = Image.new("RGB", (480, 270), (40, 90, 160))
    expected = draw_caption(base.copy(), Caption("Pool 21.5", size=0.12))
    got = draw_caption(base.copy(), Caption(f"Pool{control} 21.5", size=0.12))
    assert got.tobytes() == expected.tobytes()


RULE = """
[[cameras]]
id = "cam"
source = "file"
path = "{path}"

[[sensors]]
id = "label"
topic = "pool/label"
format = "text"

[[rules]]
id = "photo"
every = "1h"
text = "The pool"
images = [{{ camera = "cam", caption = "Pool\\r{{{{ label }}}}\\u2029end\\u0085", alt = "pool" }}]
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_post_with_a_carriage_return_caption_goes_out(
    make_gateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    still = tmp_path / "cam.jpg"
    still.write_bytes(scene_jpeg(size=(320, 240)))
    gateway = make_gateway(RULE.format(path=still))
    for _ in range(2):  # every firing, not only the first
        post = gateway.fire("photo")
        assert post is not None
        assert len(post.media) == 1
        time.sleep(0.01)
    deliver_all(gateway)
    records = archive_posts(gateway.state_dir)
    assert len(records) == 2
    assert all(len(record["media"]) == 1 for record in records), json.dumps(records)[:500]


def test_a_caption_that_cannot_be_laid_out_is_left_off_with_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No text is known to fail layout once normalised; Pillow's own failure (the
    # RuntimeError raqm raised for a bare \r) stands in for whatever raqm refuses next.
    from PIL import ImageFont

    def failing_layout(*args: object, **kwargs: object) -> float:
        raise RuntimeError("raqm_layout() failed.")

    monkeypatch.setattr(ImageFont.FreeTypeFont, "getlength", failing_layout)
    base = Image.new("RGB", (200, 100), (40, 90, 160))
    with caplog.at_level(logging.WARNING, logger="gateway.media.captions"):
        out = draw_caption(base.copy(), Caption("anything"))
    assert out.tobytes() == base.tobytes()
    assert "caption left off" in caplog.text
