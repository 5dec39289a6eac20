"""Clips and photos from a live RTSP camera: GStreamer's RTSP server on loopback
(tests/rtsp_server.py) streams H.264 over RTP, with and without a password.

These tests skip when the server cannot run here (it needs Debian's
gir1.2-gst-rtsp-server-1.0 and GStreamer plugins); ``.ci/run`` installs them and
sets THINGS_GATEWAY_RTSP_TESTS=required, so in CI they fail instead.  A V4L2
device (``format = "v4l2"``) is still untested: it needs the v4l2loopback kernel
module, which a container cannot load.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from gateway.media.video import VideoError, moov_before_mdat
from gateway.media.videoworker import VideoWorker
from tests.gwutil import archive_posts
from tests.mediautil import deliver_all, make_gateway  # noqa: F401
from tests.test_video_streams import stream_rule

SERVER = Path(__file__).with_name("rtsp_server.py")
PASSWORD = "s3cret-camera-pw"


def system_python() -> str | None:
    """The system python3 with GStreamer's RTSP server bindings, or None."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        return None
    probe = subprocess.run(
        [python, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        check=False,
    )
    return python if probe.returncode == 0 else None


def start_server(credentials: str | None) -> tuple[subprocess.Popen[str], int]:
    python = system_python()
    if python is None:
        reason = "gst-rtsp-server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0)"
        if os.environ.get("THINGS_GATEWAY_RTSP_TESTS") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    argv = [python, str(SERVER), str(port), *([credentials] if credentials else [])]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.strip() == "ready", server.stderr.read() if server.stderr else line
    return server, port


@pytest.fixture
def camera() -> Iterator[str]:
    """The URL of a live RTSP camera that needs no password."""
    server, port = start_server(None)
    yield f"rtsp://127.0.0.1:{port}/cam"
    server.kill()
    server.communicate()


@pytest.fixture
def locked_camera() -> Iterator[int]:
    """The port of a live RTSP camera whose stream needs viewer:PASSWORD."""
    server, port = start_server(f"viewer:{PASSWORD}")
    yield port
    server.kill()
    server.communicate()


def decoded(path: Path) -> tuple[int, float, tuple[int, int], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return (
            frames,
            float(stream.average_rate or 0),
            (stream.width, stream.height),
            stream.codec_context.name,
        )


def test_a_clip_is_recorded_from_a_live_rtsp_camera(camera: str, tmp_path: Path) -> None:
    # RTSP gives the first decoded frame no timestamp; that frame once set the
    # clip's clock to the wall clock and the rest of the stream never caught up
    out = VideoWorker().run(
        "record_stream", url=camera, dest=tmp_path / "clip.mp4", seconds=2, fps=5, timeout=5
    )
    assert decoded(out.path) == (10, 5.0, (320, 240), "h264")
    assert out.duration == pytest.approx(2.0)
    assert moov_before_mdat(out.path)


def test_a_rule_posts_a_photo_and_a_clip_from_an_rtsp_camera(
    make_gateway,  # noqa: F811
    camera: str,
) -> None:
    gateway = make_gateway(stream_rule(camera))
    post = gateway.fire("opening")
    assert post is not None
    photo, clip = post.media
    assert (photo.mime, photo.width, photo.height) == ("image/jpeg", 320, 240)
    assert clip.mime == "video/mp4"
    assert decoded(clip.path)[:2] == (10, 5.0)
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    assert [m["mime"] for m in record["media"]] == ["image/jpeg", "video/mp4"]


def test_the_camera_password_opens_the_stream_and_never_shows(
    make_gateway,  # noqa: F811
    locked_camera: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    right = f"rtsp://viewer:{PASSWORD}@127.0.0.1:{locked_camera}/cam"
    wrong = f"rtsp://viewer:not-{PASSWORD}@127.0.0.1:{locked_camera}/cam"
    worker = VideoWorker()
    out = worker.run("record_stream", url=right, dest=tmp_path / "a.mp4", seconds=1, fps=5)
    assert decoded(out.path)[0] == 5
    with pytest.raises(VideoError, match="401 Unauthorized") as caught:
        worker.run("record_stream", url=wrong, dest=tmp_path / "b.mp4", seconds=1, fps=5)
    assert PASSWORD not in str(caught.value)
    # through a rule: the post goes out without the clip, and the log names no password
    post = make_gateway(stream_rule(wrong)).fire("opening")
    assert post is not None
    assert post.media == ()
    assert "401 Unauthorized" in caplog.text
    assert PASSWORD not in caplog.text
