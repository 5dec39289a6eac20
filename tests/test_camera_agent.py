"""`things-device camera`: command and HTTP sources, bounded size, on-request frames, LWT."""

from __future__ import annotations

import http.server
import io
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devices.camera import CameraAgent
from devices.cli import config_argv
from devices.simulate import make_frame
from devices.sources import FrameSourceError, command_source, fit_jpeg, http_source
from gateway.demo.broker import Broker
from tests.gwutil import publish

FRAME = make_frame(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))


class SnapshotServer:
    """An HTTP camera on 127.0.0.1 serving /snapshot.jpg (and 404 elsewhere)."""

    def __init__(self, body: bytes) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path != "/snapshot.jpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def snapshot_server() -> Iterator[SnapshotServer]:
    server = SnapshotServer(FRAME)
    yield server
    server.close()


def test_http_source_fetches_the_snapshot_and_reports_errors(
    snapshot_server: SnapshotServer,
) -> None:
    assert http_source(f"{snapshot_server.url}/snapshot.jpg")() == FRAME
    with pytest.raises(FrameSourceError, match="HTTP 404"):
        http_source(f"{snapshot_server.url}/nope.jpg")()
    with pytest.raises(FrameSourceError, match="ConnectError"):
        http_source("http://127.0.0.1:9/snapshot.jpg", timeout=2)()


def test_command_source_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(
        FrameSourceError, match="cannot run 'no-such-camera-tool': No such file or directory"
    ):
        command_source("no-such-camera-tool --grab")()
    script = "import sys; print('broken lens', file=sys.stderr); sys.exit(3)"
    with pytest.raises(FrameSourceError, match="exited with 3: broken lens"):
        command_source(f'{sys.executable} -c "{script}"')()
    (tmp_path / "x.txt").write_text("not an image")
    with pytest.raises(FrameSourceError, match="did not return a usable image"):
        command_source(f"cat {tmp_path / 'x.txt'}")()
    gif = tmp_path / "x.gif"  # an image, but not one the gateway takes from a camera topic
    Image.new("RGB", (8, 8)).save(gif)
    with pytest.raises(FrameSourceError, match="did not return a JPEG or PNG"):
        command_source(f"cat {gif}")()


def test_command_source_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A wrapper script's camera tool must not outlive the capture and hold the camera."""
    pid_file = tmp_path / "tool.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"  # the 'camera tool' is sleep
    with pytest.raises(FrameSourceError, match=r"timed out after 0\.5s"):
        command_source(f"sh -c {shlex.quote(script)}", timeout=0.5)()
    tool = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while running(tool) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(tool):
        os.kill(tool, signal.SIGKILL)
        pytest.fail("the camera tool started by the command outlived the timeout")


def running(pid: int) -> bool:
    """True while ``pid`` runs (a killed orphan may linger as a zombie until reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_fit_jpeg_bounds_the_size() -> None:
    noisy = Image.effect_noise((1600, 1200), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, format="JPEG", quality=95)
    big = out.getvalue()
    assert len(big) > 300_000
    small = fit_jpeg(big, 300_000)
    assert len(small) <= 300_000
    assert Image.open(io.BytesIO(small)).format == "JPEG"
    assert fit_jpeg(FRAME, 10_000_000) is FRAME  # small enough: untouched


def test_agent_publishes_http_frames_on_request_retained(
    broker: Broker,
    mqtt_topic: str,
    snapshot_server: SnapshotServer,
    mqtt_subscribe: Callable[..., Any],
) -> None:
    topic = f"{mqtt_topic}/cam"
    status = mqtt_subscribe(f"{topic}/status")
    agent = CameraAgent(
        http_source(f"{snapshot_server.url}/snapshot.jpg"),
        host=broker.host,
        port=broker.port,
        topic=topic,
        interval=0,  # on request only
    )
    agent.start()
    try:
        status.wait_for(lambda ms: any(m.payload == b"online" for m in ms))
        assert snapshot_server.requests == []  # nothing captured until asked
        frames = mqtt_subscribe(topic)
        publish(broker, [(f"{topic}/capture", b"now")])
        (msg,) = frames.wait_for(lambda ms: len(ms) >= 1)
    finally:
        agent.stop()
    assert msg.payload == FRAME
    assert snapshot_server.requests == ["/snapshot.jpg"]
    assert agent.published == 1
    late = mqtt_subscribe(topic).wait_for(lambda ms: len(ms) >= 1)
    assert late[0].retain
    assert late[0].payload == FRAME
    offline = status.wait_for(lambda ms: ms[-1].payload == b"offline")
    assert offline[-1].payload == b"offline"


def test_cli_camera_from_config_file_with_command_source_and_lwt(
    broker: Broker, mqtt_topic: str, tmp_path: Path, mqtt_subscribe: Callable[..., Any]
) -> None:
    frame_file = tmp_path / "frame.jpg"
    frame_file.write_bytes(FRAME)
    topic = f"{mqtt_topic}/cam"
    config = tmp_path / "cam.toml"
    config.write_text(
        f"""agent = "camera"
host = "{broker.host}"
port = {broker.port}
topic = "{topic}"
source = "command"
command = "cat {frame_file}"
interval = 0.2
max_bytes = 2000000
""",
        encoding="utf-8",
    )
    frames = mqtt_subscribe(topic)
    status = mqtt_subscribe(f"{topic}/status")
    agent = subprocess.Popen(
        [sys.executable, "-m", "devices", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        got = frames.wait_for(lambda ms: len(ms) >= 3, timeout=20)
        status.wait_for(lambda ms: any(m.payload == b"online" for m in ms))
    finally:
        agent.send_signal(signal.SIGKILL)  # vanish: the broker must publish the last will
        agent.communicate(timeout=10)
    assert all(m.payload == FRAME for m in got[:3])
    final = status.wait_for(lambda ms: ms[-1].payload == b"offline", timeout=10)
    assert final[-1].payload == b"offline"


def test_config_argv_and_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "s3cret")
    argv = config_argv({"agent": "camera", "command_topic": "a/b", "password": "${CAM_PASSWORD}"})
    assert argv == ["camera", "--command-topic", "a/b", "--password", "s3cret"]
    with pytest.raises(ValueError, match="agent"):
        config_argv({"topic": "x"})
    bad = tmp_path / "bad.toml"
    bad.write_text('agent = "camera"\ntopic = "t"\nsource = "picamera"\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "devices", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78
    assert "picamera2 is not importable" in result.stderr
    assert "--system-site-packages" in result.stderr
