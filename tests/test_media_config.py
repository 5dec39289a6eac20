"""Config of cameras, rule media and [media]: each source parses; each error names its path."""

from __future__ import annotations

import tomllib
from datetime import timedelta

import pytest

from gateway.config import (
    CommandCameraConfig,
    ConfigError,
    FileCameraConfig,
    HttpCameraConfig,
    MqttCameraConfig,
    PicameraConfig,
    parse_size,
)
from gateway.ingest.routes import RouteTable
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore

BASE = """
[[sensors]]
id = "water_temp"
topic = "pool/temp"

[[publishers]]
id = "archive"
type = "file"

[[rules]]
id = "r"
every = "1h"
text = "hi"
publish_to = ["archive"]
"""

CAMERAS = """
[[cameras]]
id = "pushed"
topic = "pool/cam"

[[cameras]]
id = "esp32"
source = "http"
url = "http://esp32cam.lan/capture"
timeout = "5s"
username = "admin"
password = "${CAM_PASSWORD}"
auth = "digest"
max_bytes = "2MB"
max_age = "1m"
on_missing = "skip_post"

[[cameras]]
id = "motion"
source = "file"
path = "/var/lib/motion/*.jpg"

[[cameras]]
id = "still"
source = "command"
argv = ["rpicam-still", "-o", "-"]
timeout = "15s"

[[cameras]]
id = "pi"
source = "picamera"
resolution = [2028, 1520]
"""


def load(text: str) -> object:
    return validate_config(tomllib.loads(text))


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(tomllib.loads(text))
    return info.value.errors


def test_every_camera_source_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "hunter2")
    config = validate_config(tomllib.loads(BASE + CAMERAS))
    pushed, esp32, motion, still, pi = config.cameras
    assert isinstance(pushed, MqttCameraConfig)
    assert pushed.source == "mqtt"  # the default
    assert isinstance(esp32, HttpCameraConfig)
    assert esp32.credentials() == ("admin", "hunter2")
    assert esp32.max_bytes == 2_000_000
    assert esp32.max_age == timedelta(minutes=1)
    assert esp32.on_missing == "skip_post"
    assert "hunter2" not in repr(esp32)
    assert isinstance(motion, FileCameraConfig)
    assert isinstance(still, CommandCameraConfig)
    assert still.argv == ("rpicam-still", "-o", "-")
    assert isinstance(pi, PicameraConfig)
    assert pi.resolution == (2028, 1520)
    assert [c.pulled for c in config.cameras] == [False, True, True, True, True]
    subscriptions = RouteTable(config, StateStore()).subscriptions()
    assert subscriptions == ["pool/temp", "pool/cam"]  # pulled cameras: no topic


def test_camera_errors_name_their_paths_without_the_union_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "hunter2")
    text = (
        BASE
        + CAMERAS.replace('url = "http://esp32cam.lan/capture"', 'url = "ftp://x"')
        .replace('auth = "digest"', 'auth = "kerberos"\ncolour = "red"')
        .replace('argv = ["rpicam-still", "-o", "-"]', "argv = []")
        .replace('path = "/var/lib/motion/*.jpg"', "")
        .replace('on_missing = "skip_post"', 'on_missing = "shrug"')
        + '\n[[cameras]]\nid = "odd"\nsource = "carrier-pigeon"\n'
    )
    found = errors(text)
    prefixes = [
        "cameras[1].url: ",
        "cameras[1].auth: ",
        "cameras[1].colour: unknown key",
        "cameras[1].on_missing: ",
        "cameras[2].path: Field required",
        "cameras[3].argv: ",
        "cameras[5]: source must be one of: mqtt, http, file, command, picamera",
    ]
    for prefix in prefixes:
        assert any(e.startswith(prefix) for e in found), (prefix, found)
    assert len(found) == len(prefixes)
    assert not any("hunter2" in e for e in found)


def test_rule_media_need_alt_text_and_known_ids() -> None:
    rule = """
[[cameras]]
id = "cam"
topic = "pool/cam"

[[rules]]
id = "daily"
every = "1d"
text = "Today"
charts = [{ sensor = "water_temp" }, { sensor = "air", alt = "Air" }]
timelapse = { camera = "cam", frames = 1 }
publish_to = ["archive"]
"""
    found = errors(BASE + rule)
    assert "rules[1].charts[0].alt: Field required" in found
    assert "rules[1].timelapse.alt: Field required" in found
    assert any(e.startswith("rules[1].timelapse.frames: ") for e in found)

    fixed = rule.replace('{ sensor = "water_temp" }', '{ sensor = "water_temp", alt = "W" }')
    fixed = fixed.replace("frames = 1 }", 'frames = 48, alt = "{{ nope }}" }')
    fixed = fixed.replace('camera = "cam", frames', 'camera = "cma", frames')
    assert errors(BASE + fixed) == [
        "rules[1].charts[1].sensor: no sensor with id 'air'",
        "rules[1].timelapse.camera: no camera with id 'cma'",
        "rules[1].timelapse.alt: unknown name 'nope' (not a sensor id or now/gateway/rule/family)",
    ]


def test_media_section_accepts_sizes_and_durations() -> None:
    config = validate_config(
        tomllib.loads(BASE + '[media]\nmax_age = "3d"\nmax_bytes = "1.5 GiB"\n')
    )
    assert config.media.max_age == timedelta(days=3)
    assert config.media.max_bytes == int(1.5 * 1024**3)
    assert validate_config(tomllib.loads(BASE)).media.max_bytes == 500_000_000
    found = errors(BASE + '[media]\nmax_bytes = "lots"\nkeep_recent_frames = 0\n')
    assert any(e.startswith("media.max_bytes: invalid size") for e in found)
    assert any(e.startswith("media.keep_recent_frames: ") for e in found)


@pytest.mark.parametrize(
    ("text", "size"),
    [("500MB", 500_000_000), ("2 KiB", 2048), ("750k", 750_000), (12, 12), ("3 GB", 3 * 10**9)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size
