"""The apprise publisher, through Apprise's own ``json://`` and ``form://`` services,
to a local recording server: the body, the title and the attached image bytes."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest.importorskip("apprise")

from gateway.config import ConfigError
from gateway.model import PermanentError, Post, Receipt, RetryableError, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.apprise import AppriseConfig, ApprisePublisher
from gateway.publishers.base import Publisher, PublisherContext
from gateway.runtime.loading import validate_config
from tests.fakes.media import jpeg
from tests.fakes.webhook import FakeWebhook
from tests.test_video import MP4_RULE


@pytest.fixture
def server() -> Iterator[FakeWebhook]:
    with FakeWebhook() as fake:
        yield fake


def build(
    server: FakeWebhook, tmp_path: Path, scheme: str = "json", **options: object
) -> ApprisePublisher:
    host = server.url.removeprefix("http://")
    config = AppriseConfig.model_validate(
        {
            "id": "notify",
            "type": "apprise",
            "urls": [f"{scheme}://{host}/hooks/tok-SECRET"],
            **options,
        }
    )
    return build_publisher(config, PublisherContext(tmp_path, "pool"))


def a_post(tmp_path: Path, n_images: int = 1) -> Post:
    media = tuple(jpeg(tmp_path, f"a{n}.jpg", (80 + n, 60), f"View {n}") for n in range(n_images))
    return Post(new_post_id(), "hourly", datetime.now(UTC), "Water 24 °C", media, "en")


def test_json_body_title_and_attachment(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path, title="{gateway}: {rule}")
    post = a_post(tmp_path, 2)
    receipt = publisher.publish(post, "Water 24 °C 🐟", post.media, "key-1")
    publisher.close()
    (sent,) = server.calls("/hooks/tok-SECRET", "POST")
    body = sent.json()
    assert body["title"] == "pool: hourly"
    assert body["message"] == "Water 24 °C 🐟"
    attachments = body["attachments"]
    assert [a["filename"] for a in attachments] == ["a0.jpg", "a1.jpg"]
    assert [a["mimetype"] for a in attachments] == ["image/jpeg", "image/jpeg"]
    for attachment, item in zip(attachments, post.media, strict=True):
        assert base64.b64decode(attachment["base64"]) == item.path.read_bytes()
    assert receipt == Receipt(post.id)
    assert isinstance(publisher, Publisher)


def test_form_posts_the_image_as_a_file_part(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path, scheme="form")
    post = a_post(tmp_path, 1)
    publisher.publish(post, "with a file", post.media, "key-2")
    (sent,) = server.calls("/hooks/", "POST")
    parts = {p.name: p for p in sent.parts}
    assert parts["message"].text == "with a file"
    files = [p for p in sent.parts if p.filename]
    assert [f.data for f in files] == [post.media[0].path.read_bytes()]


def test_failure_is_retryable_and_secret_free(
    server: FakeWebhook, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    publisher = build(server, tmp_path)
    server.reply_next(500, {"error": "down"})
    post = a_post(tmp_path, 0)
    with pytest.raises(RetryableError) as info:
        publisher.publish(post, "x", (), "key-3")
    assert "SECRET" not in str(info.value)
    assert "SECRET" not in caplog.text
    assert publisher.capabilities.max_text is None


def test_bad_url_and_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = AppriseConfig.model_validate(
        {"id": "n", "type": "apprise", "urls": ["nosuchscheme://tok-SECRET"], "max_text": 280}
    )
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
    assert publisher.capabilities.max_text == 280
    with pytest.raises(PermanentError, match=r"urls\[0\]") as info:
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    assert "SECRET" not in str(info.value)
    with pytest.raises(ConfigError, match="title"):
        validate_config(
            {"publishers": [{"id": "n", "type": "apprise", "urls": ["json://h"], "title": "{x}"}]}
        )
    # check-config names the missing extra when Apprise is not installed.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "apprise" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"things-gateway\[apprise\]"):
        validate_config({"publishers": [{"id": "n", "type": "apprise", "urls": ["json://h"]}]})


@pytest.mark.parametrize("title", ["{nope}", "{rule", "{gateway}: {0}"])
def test_title_may_only_use_rule_and_gateway(title: str) -> None:
    config = {
        "publishers": [
            {"id": "n", "type": "apprise", "urls": ["json://127.0.0.1/x"], "title": title}
        ]
    }
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    (error,) = info.value.errors
    assert error.startswith("publishers[0].title: ")
    assert "title" in error.split(": ", 1)[1]


APPRISE_VIDEO_RULE = (
    MP4_RULE.split("[[publishers]]")[0]
    .replace('publish_to = ["archive", "console"]', 'publish_to = ["notify"]')
    .replace("fps = 8\n", "fps = 8\nmax_side = 640\n")
    + """
[[publishers]]
id = "notify"
type = "apprise"
urls = ["json://HOST/hooks/tok-SECRET"]
"""
)


def noisy_jpeg() -> bytes:
    """A frame of noise: no two alike, so the video is large."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((640, 480), 60).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def video_through_apprise(
    server: FakeWebhook, tmp_path: Path, extra: str = "", *, noisy: bool = False
) -> dict[str, object]:
    from datetime import timedelta

    from tests.mediautil import deliver_all, gateway_from, scene_jpeg

    host = server.url.removeprefix("http://")
    body = APPRISE_VIDEO_RULE.replace("HOST", host) + extra
    gateway = gateway_from(tmp_path / "state", body)
    now = datetime.now(UTC)
    for k in range(24, 0, -1):
        at = now - timedelta(minutes=30 * k)
        frame = noisy_jpeg() if noisy else scene_jpeg(at, (640, 480))
        gateway.state.set_frame(gateway.frames.store("underwater", frame, at))
    post = gateway.fire("daily")
    assert post is not None
    deliver_all(gateway)
    gateway.outbox.close()
    (sent,) = server.calls("/hooks/tok-SECRET", "POST")
    ((attachment,),) = [sent.json()["attachments"]]
    data = base64.b64decode(attachment["base64"])
    return {"post": post, "attachment": attachment, "data": data}


def test_a_video_is_attached_as_the_mp4(server: FakeWebhook, tmp_path: Path) -> None:
    from gateway.media.video import probe

    got = video_through_apprise(server, tmp_path)
    attachment, data = got["attachment"], got["data"]
    assert isinstance(attachment, dict)
    assert attachment["mimetype"] == "video/mp4"
    assert attachment["filename"].endswith(".mp4")
    post = got["post"]
    assert isinstance(post, Post)
    assert data == post.media[0].path.read_bytes()
    copy = tmp_path / "received.mp4"
    copy.write_bytes(data if isinstance(data, bytes) else b"")
    assert probe(copy).frames == 24


def test_a_video_over_max_video_bytes_is_re_encoded_to_fit(
    server: FakeWebhook, tmp_path: Path
) -> None:
    from gateway.media.video import probe

    got = video_through_apprise(server, tmp_path, extra='max_video_bytes = "200KB"\n', noisy=True)
    data = got["data"]
    post = got["post"]
    assert isinstance(data, bytes)
    assert isinstance(post, Post)
    assert post.media[0].bytes > 200_000  # the master did not fit
    assert len(data) <= 200_000
    copy = tmp_path / "received.mp4"
    copy.write_bytes(data)
    assert probe(copy).duration == pytest.approx(3.0)


def assert_the_poster_went(got: dict[str, object]) -> None:
    """The attachment is the video's poster frame (a JPEG), not the MP4."""
    attachment, data, post = got["attachment"], got["data"], got["post"]
    assert isinstance(attachment, dict)
    assert isinstance(post, Post)
    assert attachment["mimetype"] == "image/jpeg"
    assert post.media[0].poster is not None
    assert data == post.media[0].poster.read_bytes()


def test_max_video_bytes_0_attaches_the_poster(server: FakeWebhook, tmp_path: Path) -> None:
    assert_the_poster_went(video_through_apprise(server, tmp_path, extra="max_video_bytes = 0\n"))


def test_a_video_that_cannot_fit_is_sent_as_its_poster(
    server: FakeWebhook, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 10 KB cannot hold 3 s of video (the lowest bitrate tried is 64 kbit/s)
    assert_the_poster_went(
        video_through_apprise(server, tmp_path, extra='max_video_bytes = "10KB"\n')
    )
    assert "cannot be fitted: the poster frame goes instead" in caplog.text


def test_a_url_without_attachments_makes_the_video_go_as_its_poster(
    server: FakeWebhook, tmp_path: Path
) -> None:
    from gateway.media.fitting import MediaFitter
    from tests.fakes.media import mp4

    def with_urls(*urls: str) -> Publisher:
        config = AppriseConfig.model_validate({"id": "notify", "type": "apprise", "urls": urls})
        return build_publisher(config, PublisherContext(tmp_path, "pool"))

    host = server.url.removeprefix("http://")
    mixed = with_urls(f"json://{host}/hooks/a", "syslog://")
    assert mixed.capabilities.video is None  # syslog would drop the MP4
    files = with_urls(f"json://{host}/hooks/a", f"form://{host}/hooks/b")
    assert files.capabilities.video is not None
    item = mp4(tmp_path, "lapse.mp4", "The pool")
    (still,) = MediaFitter().fit((item,), mixed.capabilities)
    assert still.mime == "image/jpeg"
    (video,) = MediaFitter().fit((item,), files.capabilities)
    assert video.mime == "video/mp4"
