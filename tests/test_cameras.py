"""Frame sources against a real local HTTP server and real subprocesses."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import sys
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from gateway.media.cameras import (
    FrameSourceError,
    capture_picamera,
    fetch_http_snapshot,
    newest_file,
    run_snapshot_command,
)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()
USER, PASSWORD, REALM, NONCE = "cam", "s3cret", "camera", "abc123"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 2617 digest is MD5


class CameraHandler(BaseHTTPRequestHandler):
    """A fake IP camera; records the Authorization headers it receives."""

    received: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str = "image/jpeg", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        type(self).received.append(auth)
        if self.path == "/snap.jpg":
            self._send(200, JPEG)
        elif self.path == "/basic":
            expected = "Basic " + b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if auth == expected:
                self._send(200, JPEG)
            else:
                self._send(401, b"", **{"WWW-Authenticate": f'Basic realm="{REALM}"'})
        elif self.path == "/digest":
            if auth and self._digest_ok(auth):
                self._send(200, JPEG)
            else:
                challenge = f'Digest realm="{REALM}", nonce="{NONCE}", qop="auth", algorithm=MD5'
                self._send(401, b"", **{"WWW-Authenticate": challenge})
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, JPEG)
        elif self.path == "/redirect":
            self._send(302, b"", "text/plain", Location="/snap.jpg")
        elif self.path == "/error":
            self._send(500, b"boom", "text/plain")
        elif self.path == "/html":
            self._send(200, b"<html>login</html>", "text/html")
        elif self.path == "/big":
            self._send(200, JPEG + b"\0" * 50_000)
        else:
            self._send(404, b"", "text/plain")

    def _digest_ok(self, header: str) -> bool:
        fields = dict(re.findall(r'(\w+)="?([^",]+)"?', header))
        ha1 = md5(f"{USER}:{REALM}:{PASSWORD}")
        ha2 = md5(f"GET:{fields.get('uri')}")
        parts = [ha1, NONCE, fields.get("nc"), fields.get("cnonce"), "auth", ha2]
        return header.startswith("Digest ") and fields.get("response") == md5(
            ":".join(map(str, parts))
        )


@pytest.fixture
def camera() -> Iterator[str]:
    CameraHandler.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), CameraHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_snapshot(camera: str) -> None:
    assert fetch_http_snapshot(f"{camera}/snap.jpg", timeout=5, max_bytes=100_000) == JPEG
    assert CameraHandler.received == [None]


def test_http_basic_auth_is_sent(camera: str) -> None:
    data = fetch_http_snapshot(
        f"{camera}/basic", timeout=5, max_bytes=100_000, auth=(USER, PASSWORD)
    )
    assert data == JPEG
    assert CameraHandler.received == ["Basic Y2FtOnMzY3JldA=="]


def test_http_basic_auth_is_not_forwarded_on_redirect(camera: str) -> None:
    data = fetch_http_snapshot(
        f"{camera}/redirect", timeout=5, max_bytes=100_000, auth=(USER, PASSWORD)
    )
    assert data == JPEG
    assert CameraHandler.received == ["Basic Y2FtOnMzY3JldA==", None]


def test_http_wrong_password_says_so(camera: str) -> None:
    with pytest.raises(FrameSourceError, match=r"HTTP 401.*password"):
        fetch_http_snapshot(f"{camera}/basic", timeout=5, max_bytes=100_000, auth=(USER, "no"))


def test_http_digest_auth_answers_the_challenge(camera: str) -> None:
    data = fetch_http_snapshot(
        f"{camera}/digest",
        timeout=5,
        max_bytes=100_000,
        auth=(USER, PASSWORD),
        auth_scheme="digest",
    )
    assert data == JPEG
    first, second = CameraHandler.received
    assert first is None
    assert second is not None
    assert second.startswith("Digest ")
    assert f'username="{USER}"' in second


def test_http_slow_camera_times_out(camera: str) -> None:
    with pytest.raises(FrameSourceError, match="timed out"):
        fetch_http_snapshot(f"{camera}/slow", timeout=0.2, max_bytes=100_000)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/error", "HTTP 500"),
        ("/html", "did not return a usable image"),
        ("/big", "more than 10000 bytes"),
        ("/missing", "HTTP 404"),
    ],
)
def test_http_failures(camera: str, path: str, message: str) -> None:
    with pytest.raises(FrameSourceError, match=message):
        fetch_http_snapshot(f"{camera}{path}", timeout=5, max_bytes=10_000)


def test_http_credentials_never_appear_in_errors(camera: str) -> None:
    url = camera.replace("http://", "http://cam:hunter2@") + "/error"
    with pytest.raises(FrameSourceError) as info:
        fetch_http_snapshot(url, timeout=5, max_bytes=10_000)
    assert "hunter2" not in str(info.value)


def test_http_query_string_passwords_never_appear_in_errors(camera: str) -> None:
    """Reolink-style snapshot URLs carry the password in the query string."""
    from devices.sources import FrameSourceError as AgentError
    from devices.sources import http_source

    url = f"{camera}/error?cmd=Snap&user=admin&password=hunter2"
    with pytest.raises(FrameSourceError) as info:
        fetch_http_snapshot(url, timeout=5, max_bytes=10_000)
    assert "HTTP 404" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(AgentError) as agent:  # the camera agent's own HTTP source
        http_source(url.replace("http://", "http://cam:pw-in-url@"), timeout=5)()
    assert "HTTP 404" in str(agent.value)
    assert "hunter2" not in str(agent.value)
    assert "pw-in-url" not in str(agent.value)


# what ffmpeg prints when an RTSP camera refuses it
FFMPEG_ERROR = "rtsp://admin:hunter2@10.0.0.5:554/h264: Server returned 401 Unauthorized"


def test_command_errors_quoting_a_camera_url_are_masked() -> None:
    from devices.sources import FrameSourceError as AgentError
    from devices.sources import command_source

    code = f"import sys; sys.stderr.write({FFMPEG_ERROR!r} + '\\n'); sys.exit(1)"
    with pytest.raises(FrameSourceError) as info:
        run_snapshot_command([sys.executable, "-c", code], timeout=10, max_bytes=1000)
    assert "rtsp://***@10.0.0.5:554/h264: Server returned 401" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(AgentError) as agent:
        command_source(f"{sys.executable} -c {code!r}", timeout=10)()
    assert "Server returned 401" in str(agent.value)
    assert "hunter2" not in str(agent.value)


def test_http_unreachable_and_bad_scheme() -> None:
    with pytest.raises(FrameSourceError, match="cannot reach"):
        fetch_http_snapshot("http://127.0.0.1:9/snap.jpg", timeout=2, max_bytes=10_000)
    with pytest.raises(FrameSourceError, match="http or https"):
        fetch_http_snapshot("file:///etc/passwd", timeout=2, max_bytes=10_000)


def test_newest_file(tmp_path: Path) -> None:
    assert newest_file(str(tmp_path / "*.jpg")) is None
    for age, name in [(30, "a.jpg"), (10, "b.jpg"), (20, "c.jpg")]:
        path = tmp_path / name
        path.write_bytes(JPEG)
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    (tmp_path / ".d.jpg.tmp").write_bytes(b"half")  # being written: newer but skipped
    (tmp_path / ".e.jpg").write_bytes(b"half")
    (tmp_path / "dir.jpg").mkdir()
    assert newest_file(str(tmp_path / "*.jpg")) == tmp_path / "b.jpg"
    nested = tmp_path / "2026" / "11"
    nested.mkdir(parents=True)
    (nested / "z.jpg").write_bytes(JPEG)
    assert newest_file(str(tmp_path / "**" / "*.jpg")) == nested / "z.jpg"


def test_command_writes_a_jpeg(tmp_path: Path) -> None:
    src = tmp_path / "frame.jpg"
    src.write_bytes(JPEG)
    code = f"import sys; sys.stdout.buffer.write(open({str(src)!r}, 'rb').read())"
    assert run_snapshot_command([sys.executable, "-c", code], timeout=10, max_bytes=100_000) == JPEG


def test_command_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    with pytest.raises(FrameSourceError, match="timed out"):
        run_snapshot_command(["sh", "-c", script], timeout=0.5, max_bytes=1000)
    pid = int(pidfile.read_text())
    for _ in range(100):  # the orphaned sleep is reaped by init some time after the kill
        if not _alive(pid):
            break
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_command_sleep_times_out() -> None:
    with pytest.raises(FrameSourceError, match=r"'sleep' timed out after 0\.3s"):
        run_snapshot_command(["sleep", "5"], timeout=0.3, max_bytes=1000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [sys.executable, "-c", "import sys; sys.stderr.write('no camera'); sys.exit(3)"],
            "exited with 3: no camera",
        ),
        ([sys.executable, "-c", "print('hello')"], "did not return a usable image"),
        ([sys.executable, "-c", "pass"], "returned no data"),
        ([sys.executable, "-c", "import sys; sys.stdout.write('x' * 100000)"], "more than 1000"),
        (["/nonexistent/camera-tool"], "cannot run"),
        ([], "empty"),
    ],
)
def test_command_failures(argv: list[str], message: str) -> None:
    with pytest.raises(FrameSourceError, match=message):
        run_snapshot_command(argv, timeout=10, max_bytes=1000)


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 present")
def test_picamera_missing_gives_an_install_hint() -> None:
    with pytest.raises(FrameSourceError, match="apt install python3-picamera2"):
        capture_picamera()
