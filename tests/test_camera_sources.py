"""Every camera source end to end: config → frame → post → archive, on real image bytes.

HTTP cameras are a local http.server (basic and digest auth, slow, failing); the
command source runs real subprocesses; the file source reads a real folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.runtime.app import Gateway
from tests.gwutil import archive_posts, cli
from tests.mediautil import deliver_all, image_size, make_gateway, scene_jpeg  # noqa: F401
from tests.test_cameras import JPEG, PASSWORD, USER, camera  # noqa: F401

RULE = """
[[sensors]]
id = "water_temp"
topic = "pool/temp"
unit = "°C"

[[rules]]
id = "photo"
every = "1h"
text = "The pool at {{ now | time }}"
images = [{ camera = "cam", caption = "{{ water_temp }}", alt = "The pool, seen from {{ rule }}" }]
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def cam(**fields: object) -> str:
    """A [[cameras]] table with id "cam" and ``fields``."""
    lines = ['id = "cam"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    return "[[cameras]]\n" + "\n".join(lines) + "\n" + RULE


def archived_image(gateway: Gateway) -> tuple[dict[str, object], Path]:
    """The single archived post and the file of its single image."""
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    (media,) = record["media"]
    return media, gateway.state_dir / "posts" / media["file"]


def stored_frames(gateway: Gateway) -> list[Path]:
    folder = gateway.media_dir / "frames" / "cam"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_http_source_posts_the_snapshot(make_gateway, camera: str) -> None:  # noqa: F811
    gateway = make_gateway(cam(source="http", url=f"{camera}/snap.jpg"))
    post = gateway.fire("photo")
    assert post is not None
    media, path = archived_image(gateway)
    assert media["alt"] == "The pool, seen from photo"
    assert media["mime"] == "image/jpeg"
    assert image_size(path) == (64, 48)
    (frame,) = stored_frames(gateway)  # kept like a pushed frame, byte for byte
    assert frame.read_bytes() == JPEG
    assert gateway.state.latest_frame("cam") is not None


def test_http_digest_auth_from_a_secret_ref(
    make_gateway,  # noqa: F811
    camera: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAM_PASSWORD", PASSWORD)
    gateway = make_gateway(
        cam(
            source="http",
            url=f"{camera}/digest",
            auth="digest",
            username=USER,
            password="${CAM_PASSWORD}",
        )
    )
    post = gateway.fire("photo")
    assert post is not None
    assert len(post.media) == 1


def test_http_wrong_password_posts_without_the_image_and_never_logs_it(
    make_gateway,  # noqa: F811
    camera: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "not-the-password-42"
    gateway = make_gateway(
        cam(source="http", url=f"{camera}/basic", username=USER, password=secret)
    )
    with caplog.at_level(logging.WARNING):
        post = gateway.fire("photo")
    assert post is not None
    assert post.media == ()
    assert "check the camera's user and password" in caplog.text
    assert secret not in caplog.text
    assert stored_frames(gateway) == []


def test_http_slow_camera_with_skip_post_skips_the_post(make_gateway, camera: str) -> None:  # noqa: F811
    gateway = make_gateway(
        cam(source="http", url=f"{camera}/slow", timeout="300ms", on_missing="skip_post")
    )
    assert gateway.fire("photo") is None
    assert gateway.runner.stats["photo"].skipped == 1
    assert gateway.runner.stats["photo"].failed == 0
    assert gateway.outbox.history() == []


@pytest.mark.parametrize("path", ["/error", "/html", "/missing"])
def test_http_failing_camera_posts_without_the_image(
    make_gateway,  # noqa: F811
    camera: str,  # noqa: F811
    path: str,
) -> None:
    gateway = make_gateway(cam(source="http", url=f"{camera}{path}"))
    post = gateway.fire("photo")
    assert post is not None
    assert post.media == ()
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    assert record["media"] == []


def test_command_source(make_gateway, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "still.jpg"
    source.write_bytes(scene_jpeg(size=(320, 240)))
    script = f"import sys; sys.stdout.buffer.write(open({str(source)!r}, 'rb').read())"
    gateway = make_gateway(cam(source="command", argv=[sys.executable, "-c", script]))
    assert gateway.fire("photo") is not None
    media, path = archived_image(gateway)
    assert image_size(path) == (320, 240)
    assert (media["width"], media["height"]) == (320, 240)
    (frame,) = stored_frames(gateway)
    assert frame.read_bytes() == source.read_bytes()


def test_command_timeout_posts_without_the_image(
    make_gateway,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    gateway = make_gateway(cam(source="command", argv=argv, timeout="500ms"))
    with caplog.at_level(logging.WARNING):
        post = gateway.fire("photo")
    assert post is not None
    assert post.media == ()
    assert "timed out after 0.5s" in caplog.text


def test_file_source_takes_the_newest_match(make_gateway, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "motion"
    folder.mkdir()
    old, new = folder / "a.jpg", folder / "b.jpg"
    old.write_bytes(scene_jpeg(size=(200, 100)))
    new.write_bytes(scene_jpeg(size=(300, 150)))
    (folder / "notes.txt").write_text("not an image")
    now = time.time()
    os.utime(old, (now - 60, now - 60))
    os.utime(new, (now - 30, now - 30))
    gateway = make_gateway(cam(source="file", path=str(folder / "*.jpg")))
    assert gateway.fire("photo") is not None
    _media, path = archived_image(gateway)
    assert image_size(path) == (300, 150)
    frame = gateway.state.latest_frame("cam")
    assert frame is not None
    assert frame.at == datetime.fromtimestamp(now - 30, UTC)  # the file's time, not ours
    assert gateway.fire("photo") is not None  # the same file again is not stored twice
    assert len(stored_frames(gateway)) == 1


def test_file_source_stale_file_is_missing(make_gateway, tmp_path: Path) -> None:  # noqa: F811
    still = tmp_path / "cam.jpg"
    still.write_bytes(scene_jpeg(size=(200, 100)))
    two_hours_ago = time.time() - 7200
    os.utime(still, (two_hours_ago, two_hours_ago))
    gateway = make_gateway(cam(source="file", path=str(still), max_age="1h"))
    post = gateway.fire("photo")
    assert post is not None
    assert post.media == ()
    skipping = make_gateway(
        cam(source="file", path=str(tmp_path / "nothing-*.jpg"), on_missing="skip_post")
    )
    assert skipping.fire("photo") is None


@pytest.mark.parametrize("on_missing", ["skip_image", "skip_post"])
def test_stale_mqtt_frame(make_gateway, on_missing: str) -> None:  # noqa: F811
    gateway = make_gateway(
        cam(source="mqtt", topic="pool/cam", max_age="10m", on_missing=on_missing)
    )
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    gateway.state.set_frame(gateway.frames.store("cam", scene_jpeg(hour_ago), hour_ago))
    post = gateway.fire("photo")
    if on_missing == "skip_post":
        assert post is None
        assert gateway.runner.stats["photo"].skipped == 1
    else:
        assert post is not None
        assert post.media == ()
    fresh = datetime.now(UTC)
    gateway.state.set_frame(gateway.frames.store("cam", scene_jpeg(fresh), fresh))
    post = gateway.fire("photo")
    assert post is not None
    assert len(post.media) == 1


def test_missing_mqtt_frame_with_skip_post(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(cam(topic="pool/cam", on_missing="skip_post"))  # source defaults to mqtt
    assert gateway.fire("photo") is None


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 present")
def test_picamera_missing_is_clear_at_use_and_in_check_config(
    make_gateway,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = cam(source="picamera", resolution=[1280, 720])
    gateway = make_gateway(body)
    with caplog.at_level(logging.WARNING):
        post = gateway.fire("photo")
    assert post is not None
    assert post.media == ()
    assert "apt install python3-picamera2" in caplog.text

    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n' + body, encoding="utf-8")
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "cameras[0] (cam): picamera2 is not installed" in result.stderr


def test_preview_shows_each_publishers_images(tmp_path: Path) -> None:
    still = tmp_path / "cam.jpg"
    still.write_bytes(scene_jpeg(size=(320, 240)))
    body = cam(source="file", path=str(still)).replace(
        'publish_to = ["archive"]', 'publish_to = ["archive", "console"]'
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        + body
        + '\n[[publishers]]\nid = "console"\ntype = "console"\n',
        encoding="utf-8",
    )
    result = cli("preview", "photo", "-c", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    images = [line for line in result.stdout.splitlines() if line.startswith("image: ")]
    assert len(images) == 2  # one per publisher
    assert all("(320x240," in line and "alt: The pool, seen from photo" in line for line in images)
    assert not (tmp_path / "state" / "gateway.db").exists()  # nothing stored
