"""Videos are encoded in a child process with a memory bound and a time limit, so a
huge source, a stuck stream or a killed encoder is an error the daemon survives."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.media.video import VideoError, probe
from gateway.media.videoworker import VideoWorker
from tests.mediautil import make_gateway, scene_jpeg  # noqa: F401
from tests.test_video import MP4_RULE, make_frames

ROOT = Path(__file__).resolve().parent.parent


def store_day_of_frames(gateway: object, size: tuple[int, int]) -> None:
    now = datetime.now(UTC)
    for k in range(24, 0, -1):
        at = now - timedelta(minutes=30 * k)
        frame = gateway.frames.store("underwater", scene_jpeg(at, size), at)  # type: ignore[attr-defined]
        gateway.state.set_frame(frame)  # type: ignore[attr-defined]


def test_the_daemon_encodes_in_a_child_and_never_loads_ffmpeg(tmp_path: Path) -> None:
    # the whole rule, from frames to the archived MP4, in a fresh interpreter: FFmpeg's
    # libraries (PyAV) must only ever be loaded by the worker
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from datetime import UTC, datetime, timedelta
        from tests.mediautil import deliver_all, gateway_from, scene_jpeg
        gateway = gateway_from(Path({str(tmp_path / "state")!r}), {MP4_RULE!r})
        now = datetime.now(UTC)
        for k in range(24, 0, -1):
            at = now - timedelta(minutes=30 * k)
            jpeg = scene_jpeg(at, (320, 240))
            gateway.state.set_frame(gateway.frames.store("underwater", jpeg, at))
        post = gateway.fire("daily")
        deliver_all(gateway)
        print(post.media[0].mime, post.media[0].path)
        print("av loaded" if "av" in sys.modules else "av not loaded")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[-2:]
    mime, path = first.split(" ", 1)
    assert mime == "video/mp4"
    assert probe(Path(path)).frames == 24
    assert second == "av not loaded"


def test_an_encode_over_the_memory_bound_fails_and_the_gateway_goes_on(
    make_gateway,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 1080p frames need about 250 MB; a 100 MB bound cannot even open the encoder
    rule = MP4_RULE.replace("fps = 8", "fps = 8\nmax_side = 1920")
    gateway = make_gateway(rule + '\n[media]\nvideo_memory = "100MB"\n')
    store_day_of_frames(gateway, (1920, 1080))
    with caplog.at_level(logging.WARNING):
        post = gateway.fire("daily")
    assert post is not None  # on_missing = "skip_image": the post goes out without it
    assert post.media == ()
    assert post.text.startswith("Today at the pool")
    errors = [r.getMessage() for r in caplog.records if "timelapse of underwater" in r.getMessage()]
    assert len(errors) == 1, errors
    assert "100 MB ([media] video_memory)" in errors[0]
    # the same gateway, given room, makes the video on the next firing
    roomy = make_gateway(rule)
    store_day_of_frames(roomy, (1920, 1080))
    again = roomy.fire("daily")
    assert again is not None
    assert [m.mime for m in again.media] == ["video/mp4"]
    assert probe(again.media[0].path).width == 1920


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An RTSP 'camera' that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"rtsp://127.0.0.1:{listener.getsockname()[1]}/stream1"
    listener.close()
    for conn in held:
        conn.close()


def workers() -> list[int]:
    """The pids of this process's video workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and b"gateway.media.videoworker" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_worker_past_its_time_limit_is_killed(silent_server: str, tmp_path: Path) -> None:
    worker = VideoWorker(timeout=1.5)
    started = time.monotonic()
    with pytest.raises(VideoError, match=r"took longer than 1.5 s"):
        worker.run(
            "record_stream", url=silent_server, dest=tmp_path / "c.mp4", seconds=2, timeout=60
        )
    assert time.monotonic() - started < 10
    assert workers() == []
    assert not list(tmp_path.iterdir())


def test_a_killed_worker_is_an_error_not_a_crash(silent_server: str, tmp_path: Path) -> None:
    worker = VideoWorker(timeout=60)
    caught: list[BaseException] = []

    def record() -> None:
        try:
            worker.run(
                "record_stream", url=silent_server, dest=tmp_path / "c.mp4", seconds=2, timeout=60
            )
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=record)
    thread.start()
    deadline = time.monotonic() + 20
    while not (pids := workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 1
    # under the unit's MemoryMax (daemon and worker together) the kernel's OOM killer
    # must take the worker, whose death is one error, never the daemon
    adj = Path(f"/proc/{pids[0]}/oom_score_adj")
    while adj.read_text().strip() != "1000" and time.monotonic() < deadline:
        time.sleep(0.02)  # the child sets it as it starts
    assert adj.read_text().strip() == "1000"
    assert Path("/proc/self/oom_score_adj").read_text().strip() != "1000"  # the daemon's
    os.kill(pids[0], signal.SIGKILL)  # what the kernel's OOM killer does
    thread.join(20)
    assert len(caught) == 1
    assert isinstance(caught[0], VideoError)
    assert str(caught[0]) == "the video worker was killed (SIGKILL)"


def test_the_worker_keeps_the_stream_password_out_of_its_command_line_and_errors(
    tmp_path: Path,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://viewer:hunter2-secret@127.0.0.1:{port}/stream1"
    seen: list[bytes] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pid in workers():
                with contextlib.suppress(OSError):
                    seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(VideoError) as caught:
            VideoWorker().run(
                "record_stream", url=url, dest=tmp_path / "c.mp4", seconds=1, timeout=2
            )
    finally:
        stop.set()
        watcher.join()
    assert seen, "the worker was never seen"
    assert all(b"hunter2" not in cmdline for cmdline in seen)
    assert "hunter2" not in str(caught.value)


def test_frames_the_worker_cannot_read_are_logged_in_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = make_frames(tmp_path, 4)
    broken = tmp_path / "frame-broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with caplog.at_level(logging.WARNING, logger="gateway.media.videoworker"):
        out = VideoWorker().run("encode_frames", frames=[*frames, broken], dest=tmp_path / "v.mp4")
    assert out.frames == 4
    warned = [r.getMessage() for r in caplog.records]
    assert any("frame-broken.jpg" in m for m in warned), warned


FAKE_PI = Path(__file__).resolve().parent / "fakes" / "pi"

PICAMERA_CLIP = """
[[cameras]]
id = "pi"
source = "picamera"

[[rules]]
id = "first_swimmer"
every = "1h"
text = "The first swimmer of the day"
clip = { camera = "pi", seconds = 2, fps = 5, max_side = 640, alt = "The pool, now" }
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_a_clip_is_recorded_from_the_pi_camera(
    make_gateway,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(FAKE_PI))  # the worker imports picamera2
    post = make_gateway(PICAMERA_CLIP).fire("first_swimmer")
    assert post is not None
    (clip,) = post.media
    assert clip.mime == "video/mp4"
    info = probe(clip.path)
    # 2028x1520 fitted to 640 and made even; 2 s at 5 fps, a frame taken at every tick
    assert (info.width, info.height, info.frames, info.fps) == (640, 478, 10, 5.0)
    assert clip.poster is not None
    assert clip.poster.exists()


def test_a_busy_pi_camera_follows_on_missing(
    make_gateway,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(FAKE_PI))
    monkeypatch.setenv("FAKE_PICAMERA", "busy")
    post = make_gateway(PICAMERA_CLIP).fire("first_swimmer")
    assert post is not None
    assert post.media == ()
    assert "cannot open the Pi camera: Failed to acquire camera" in caplog.text


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 present")
def test_without_picamera2_a_pi_clip_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="apt install python3-picamera2"):
        VideoWorker().run("record_picamera", dest=tmp_path / "c.mp4", seconds=1)
