"""Clips and photos from video streams (PyAV): a recorded stream file, the same file
over HTTP from a local server, and dead or silent RTSP servers on loopback, which
must fail within the timeout (never hang) and never show the URL's password.  A
live RTSP camera is in tests/test_video_rtsp.py.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from PIL import Image

from gateway.media.video import (
    VideoError,
    encode_frames,
    moov_before_mdat,
    record_stream,
    stream_snapshot,
)
from tests.mediautil import make_gateway  # noqa: F401


@pytest.fixture
def stream_file(tmp_path: Path) -> Path:
    """A 4 s, 10 fps recording standing in for a camera's stream."""
    frames = (
        Image.linear_gradient("L").resize((320, 240)).convert("RGB").rotate(n * 9)
        for n in range(40)
    )
    return encode_frames(frames, tmp_path / "camera.mp4", fps=10).path


@pytest.fixture
def http_url(stream_file: Path) -> Iterator[str]:
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(stream_file.parent)
    )
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{stream_file.name}"
    server.shutdown()
    server.server_close()


def frames_and_duration(path: Path) -> tuple[int, float, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n, float(stream.average_rate or 0), float(container.duration or 0) / 1e6


def test_record_a_stream_file_at_a_constant_rate(stream_file: Path, tmp_path: Path) -> None:
    out = record_stream(str(stream_file), tmp_path / "clip.mp4", seconds=2, fps=5, timeout=5)
    assert frames_and_duration(out.path) == (10, 5.0, pytest.approx(2.0, abs=0.01))
    assert (out.width, out.height) == (320, 240)
    assert moov_before_mdat(out.path)


def test_record_over_http(http_url: str, tmp_path: Path) -> None:
    out = record_stream(http_url, tmp_path / "clip.mp4", seconds=3, fps=8, timeout=5)
    assert frames_and_duration(out.path)[:2] == (24, 8.0)
    still = stream_snapshot(http_url, timeout=5)
    assert still[:2] == b"\xff\xd8"


def test_a_stream_ending_early_gives_a_shorter_clip(stream_file: Path, tmp_path: Path) -> None:
    out = record_stream(str(stream_file), tmp_path / "clip.mp4", seconds=10, fps=5, timeout=5)
    frames, _, duration = frames_and_duration(out.path)
    assert 19 <= frames <= 21  # the 4 s there were
    assert duration == pytest.approx(frames / 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_rtsp_server_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    url = f"rtsp://viewer:hunter2-secret@127.0.0.1:{free_port()}/stream1"
    started = time.monotonic()
    with pytest.raises(VideoError, match="cannot open the stream") as caught:
        record_stream(url, tmp_path / "clip.mp4", seconds=5, timeout=2)
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(caught.value)
    assert not (tmp_path / "clip.mp4").exists()


def test_silent_rtsp_server_times_out(tmp_path: Path) -> None:
    # accepts the connection and never answers: only the timeout can end the wait
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    url = f"rtsp://viewer:hunter2-secret@127.0.0.1:{listener.getsockname()[1]}/stream1"
    started = time.monotonic()
    try:
        with pytest.raises(VideoError) as caught:
            stream_snapshot(url, timeout=1.5)
        assert time.monotonic() - started < 15
        assert "hunter2" not in str(caught.value)
    finally:
        for conn in held:
            conn.close()
        listener.close()


def stream_rule(url: str, on_missing: str = "skip_image") -> str:
    return f"""
[[cameras]]
id = "bridge"
source = "stream"
url = "{url}"
timeout = "3s"
on_missing = "{on_missing}"

[[rules]]
id = "opening"
every = "1h"
text = "The bridge is opening"
images = [{{ camera = "bridge", alt = "The bridge now" }}]
clip = {{ camera = "bridge", seconds = 2, fps = 5, alt = "The bridge opening" }}
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_rule_records_a_clip_and_takes_a_photo_from_a_stream_camera(
    make_gateway,  # noqa: F811
    http_url: str,
) -> None:
    gateway = make_gateway(stream_rule(http_url))
    post = gateway.fire("opening")
    assert post is not None
    photo, clip = post.media
    assert photo.mime == "image/jpeg"
    assert clip.mime == "video/mp4"
    assert frames_and_duration(clip.path)[:2] == (10, 5.0)
    assert clip.poster is not None
    assert clip.poster.exists()


def test_dead_stream_camera_follows_on_missing(make_gateway) -> None:  # noqa: F811
    url = f"rtsp://127.0.0.1:{free_port()}/stream1"
    assert make_gateway(stream_rule(url, "skip_post")).fire("opening") is None


def test_preview_writes_the_mp4_and_reports_each_budget(stream_file: Path, tmp_path: Path) -> None:
    from tests.gwutil import cli

    body = stream_rule(str(stream_file)).replace(
        'publish_to = ["archive"]', 'publish_to = ["archive", "console", "sky"]'
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        + body
        + '\n[[publishers]]\nid = "console"\ntype = "console"\n'
        + '\n[[publishers]]\nid = "sky"\ntype = "bluesky"\nhandle = "a.test"\n'
        + 'app_password = "app-pass-1234"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = cli("preview", "opening", "-c", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (master,) = [line for line in lines if line.startswith("video: ") and "alt:" not in line]
    assert "(320x240, " in master
    assert "2.00 s at 5 fps" in master
    written = list(out.rglob("clip-bridge.mp4"))
    assert len(written) == 1
    assert str(written[0]) in master
    budgets = [line for line in lines if line.startswith("video budget: ")]
    assert budgets == [
        "video budget: no limit",
        "video budget: takes no video: gets the poster frame",
        "video budget: at most 100000000 bytes, 180 s; one video per post, nothing beside it",
    ]
    assert not (tmp_path / "state" / "gateway.db").exists()
