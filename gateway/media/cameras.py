"""Frame sources that pull a picture: an HTTP snapshot URL, a file, a command, a Pi camera.

Each is a plain function returning JPEG (or other image) bytes that
:func:`~gateway.media.images.probe_image` accepted; every failure is a
:class:`FrameSourceError` whose message says what to fix.  Limits are enforced
while reading, so a misbehaving camera cannot fill memory or hang a worker.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import io
import os
import selectors
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from gateway.config.secrets import redact
from gateway.media.images import ImageError, probe_image

CHUNK = 64 * 1024
_picamera_lock = threading.Lock()


class FrameSourceError(Exception):
    """A camera source could not deliver a frame; the message says why."""


def _validated(data: bytes, where: str) -> bytes:
    if not data:
        raise FrameSourceError(f"{where} returned no data")
    try:
        probe_image(data)
    except ImageError as exc:
        raise FrameSourceError(f"{where} did not return a usable image: {exc}") from exc
    return data


def _opener(url: str, auth: tuple[str, str] | None, scheme: str) -> urllib.request.OpenerDirector:
    if auth is None or scheme == "basic":
        return urllib.request.build_opener()
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, url, auth[0], auth[1])
    return urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(passwords))


def _read_limited(stream: IO[bytes], max_bytes: int, deadline: float, where: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise FrameSourceError(f"{where} sent more than {max_bytes} bytes")
        if time.monotonic() > deadline:  # a server trickling bytes slower than the timeout
            raise FrameSourceError(f"{where} timed out while sending")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_http_snapshot(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    auth: tuple[str, str] | None = None,
    auth_scheme: Literal["basic", "digest"] = "basic",
) -> bytes:
    """GET a camera's snapshot URL and return the image bytes.

    Basic credentials are sent up front, as most IP cameras expect; digest answers
    the camera's challenge.  ``timeout`` bounds connecting and each read, and the
    whole body must arrive within twice that.
    """
    where = redact(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FrameSourceError(f"snapshot URL must be http or https: {where}")
    request = urllib.request.Request(url, headers={"Accept": "image/*"})  # noqa: S310
    if auth is not None and auth_scheme == "basic":
        token = b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        # unredirected: a redirect to another host must not carry the camera's password
        request.add_unredirected_header("Authorization", f"Basic {token}")
    deadline = time.monotonic() + 2 * timeout
    try:
        with _opener(url, auth, auth_scheme).open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FrameSourceError(f"{where} sent more than {max_bytes} bytes ({length})")
            data = _read_limited(response, max_bytes, deadline, where)
    except urllib.error.HTTPError as exc:
        hint = " (check the camera's user and password)" if exc.code == 401 else ""
        raise FrameSourceError(f"{where} answered HTTP {exc.code}{hint}") from None
    except urllib.error.URLError as exc:
        raise FrameSourceError(f"cannot reach {where}: {exc.reason}") from None
    except TimeoutError:
        raise FrameSourceError(f"{where} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise FrameSourceError(f"cannot read {where}: {exc}") from None
    return _validated(data, where)


def newest_file(pattern: str) -> Path | None:
    """The most recently modified file matching the glob ``pattern`` (``**`` allowed).

    Names starting with a dot are skipped: they are files still being written.
    """
    newest: tuple[float, str] | None = None
    for name in glob.iglob(pattern, recursive=True):
        if os.path.basename(name).startswith("."):
            continue
        try:
            st = os.stat(name)
        except OSError:  # deleted between listing and stat
            continue
        if os.path.isfile(name) and (newest is None or st.st_mtime > newest[0]):
            newest = (st.st_mtime, name)
    return Path(newest[1]) if newest else None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _collect(proc: subprocess.Popen[bytes], deadline: float, max_bytes: int) -> tuple[bytes, bytes]:
    """Read stdout (up to ``max_bytes``) and the tail of stderr until both close."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, CHUNK)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if len(out) > max_bytes:
                    raise FrameSourceError(f"command wrote more than {max_bytes} bytes")
                del err[:-2000]  # only the end of stderr is worth reporting
    return bytes(out), bytes(err)


def run_snapshot_command(argv: Sequence[str], *, timeout: float, max_bytes: int) -> bytes:
    """Run ``argv`` (no shell) and return the one image it writes to stdout.

    The command runs in its own process group, killed as a whole on timeout, so a
    wrapper script cannot leave a camera tool running.
    """
    if not argv:
        raise FrameSourceError("snapshot command is empty")
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise FrameSourceError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    with proc:
        try:
            out, err = _collect(proc, deadline, max_bytes)
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, subprocess.TimeoutExpired):
            _kill_group(proc)
            raise FrameSourceError(f"command {argv[0]!r} timed out after {timeout:g}s") from None
        except BaseException:
            _kill_group(proc)
            raise
    if code != 0:
        # a camera tool's errors quote its URL, password and all (ffmpeg does)
        detail = redact(err.decode("utf-8", "replace").strip())
        raise FrameSourceError(f"command {argv[0]!r} exited with {code}: {detail}")
    return _validated(out, f"command {argv[0]!r}")


def picamera_available() -> bool:
    """True when picamera2 can be imported (checked without importing it)."""
    return importlib.util.find_spec("picamera2") is not None


def capture_picamera(resolution: tuple[int, int] | None = None) -> bytes:
    """Capture one JPEG from the Raspberry Pi camera with picamera2 (imported only here).

    ``resolution`` is the still's (width, height); by default the sensor's full size.
    """
    try:
        picamera2 = importlib.import_module("picamera2")
    except ImportError as exc:
        raise FrameSourceError(
            "the picamera source needs picamera2: sudo apt install python3-picamera2, "
            "and create the gateway's venv with --system-site-packages"
        ) from exc
    buf = io.BytesIO()
    with _picamera_lock:  # one camera, one capture at a time
        try:
            camera = picamera2.Picamera2()
        except Exception as exc:  # libcamera reports a busy or absent camera in many ways
            raise FrameSourceError(f"cannot open the Pi camera: {exc}") from exc
        try:
            main = {"size": resolution} if resolution else {}
            camera.configure(camera.create_still_configuration(main=main))
            camera.start()
            camera.capture_file(buf, format="jpeg")
        except Exception as exc:
            raise FrameSourceError(f"Pi camera capture failed: {exc}") from exc
        finally:
            camera.close()
    return _validated(buf.getvalue(), "the Pi camera")
