"""Video on every publisher that takes it, against local fakes of each service's real
upload flow: Mastodon (202, polled, thumbnail), Bluesky (embed.video), X (chunked
tweet_video, STATUS), webhook (multipart), MQTT (the path), and processing failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config.publishers import BlueskyConfig, WebhookConfig
from gateway.demo.broker import Broker
from gateway.model import PermanentError, Post, VideoLimits, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.base import BrokerSettings, MemoryStore, PublisherContext
from gateway.publishers.mastodon import MastodonPublisher
from gateway.publishers.mqtt import MqttConfig
from gateway.publishers.x import XPublisher
from tests.fakes.backends import X_KEYS
from tests.fakes.bluesky import FakePds
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.media import jpeg, mp4, video_facts
from tests.fakes.webhook import FakeWebhook
from tests.fakes.x import FakeX
from tests.test_publisher_mastodon import TOKEN

PASSWORD = "app-pass-1234"


def video_post(tmp_path: Path, *extra: Any) -> Post:
    item = mp4(tmp_path, "lapse.mp4", "The pool over the day")
    return Post(new_post_id(), "daily", datetime.now(UTC), "Today", (item, *extra), "en")


# -- Mastodon ----------------------------------------------------------------------


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon(TOKEN) as fake:
        yield fake


def mastodon_publisher(server: FakeMastodon, tmp_path: Path) -> MastodonPublisher:
    from tests.test_publisher_mastodon import build

    return build(server, tmp_path)


def test_mastodon_uploads_the_video_with_its_thumbnail_and_waits_for_processing(
    mastodon: FakeMastodon, tmp_path: Path
) -> None:
    mastodon.processing_polls = 3
    publisher = mastodon_publisher(mastodon, tmp_path)
    post = video_post(tmp_path)
    (item,) = post.media
    receipt = publisher.publish(post, "Today", post.media, "k1")
    publisher.close()
    (upload,) = mastodon.calls("/api/v2/media")
    assert upload.part("file").content_type == "video/mp4"
    assert upload.part("file").data == item.path.read_bytes()
    assert upload.part("description").text == "The pool over the day"
    (media_id,) = mastodon.media
    assert item.poster is not None
    assert mastodon.thumbnails[media_id] == item.poster.read_bytes()
    assert mastodon.media[media_id]["meta"]["original"]["frames"] == 12
    polls = [r for r in mastodon.requests if r.path == f"/api/v1/media/{media_id}"]
    assert len(polls) == 4  # 206 three times, then 200
    status = mastodon.statuses[str(receipt.remote_id)]
    assert [m["id"] for m in status["media_attachments"]] == [media_id]
    assert status["media_attachments"][0]["type"] == "gifv"


def test_mastodon_processing_failure_is_permanent(mastodon: FakeMastodon, tmp_path: Path) -> None:
    mastodon.fail_processing = True
    publisher = mastodon_publisher(mastodon, tmp_path)
    post = video_post(tmp_path)
    with pytest.raises(PermanentError, match="Error processing"):
        publisher.publish(post, "Today", post.media, "k1")
    publisher.close()
    assert mastodon.statuses == {}


def test_mastodon_video_limits_come_from_the_instance(
    mastodon: FakeMastodon, tmp_path: Path
) -> None:
    mastodon.instance_config["media_attachments"].update(
        {
            "video_size_limit": 103_809_024,
            "video_frame_rate_limit": 120,
            "video_matrix_limit": 8_294_400,
        }
    )
    publisher = mastodon_publisher(mastodon, tmp_path)
    assert publisher.capabilities.video == VideoLimits(
        max_bytes=41_943_040, max_fps=60, max_pixels=2_304_000, alone=True
    )  # the defaults, until the instance answered
    publisher.prepare()
    publisher.close()
    assert publisher.capabilities.video == VideoLimits(
        max_bytes=103_809_024, max_fps=120, max_pixels=8_294_400, alone=True
    )


# -- Bluesky -----------------------------------------------------------------------


def test_bluesky_embeds_the_video_blob_with_aspect_ratio_and_alt(tmp_path: Path) -> None:
    with FakePds("poolcam.test", PASSWORD) as pds:
        config = BlueskyConfig.model_validate(
            {
                "id": "sky",
                "type": "bluesky",
                "handle": "poolcam.test",
                "app_password": PASSWORD,
                "service": pds.url,
                "timeout": 2,
            }
        )
        publisher = build_publisher(config, PublisherContext(tmp_path, "pool", store=MemoryStore()))
        photo = jpeg(tmp_path, "photo.jpg", (80, 60), "A photo")
        post = video_post(tmp_path, photo)
        publisher.publish(post, "Today", post.media, "k1")
        publisher.close()
    (blob_mime, blob) = next(iter(pds.blobs.values()))
    assert len(pds.blobs) == 1  # one embed per post: the video, not the photo too
    assert blob_mime == "video/mp4"
    assert video_facts(blob)[0] == 12
    (record,) = pds.records.values()
    embed = record["value"]["embed"]
    assert embed["$type"] == "app.bsky.embed.video"
    assert embed["alt"] == "The pool over the day"
    assert embed["aspectRatio"] == {"width": 160, "height": 90}
    assert embed["video"]["mimeType"] == "video/mp4"


# -- X -----------------------------------------------------------------------------


@pytest.fixture
def x_server() -> Iterator[FakeX]:
    with FakeX(X_KEYS) as fake:
        yield fake


def x_publisher(server: FakeX, tmp_path: Path) -> XPublisher:
    from tests.test_x_limits import publisher

    built = publisher(server, tmp_path)
    built._sleep = lambda seconds: None
    return built


def test_x_uploads_video_in_chunks_as_tweet_video(
    x_server: FakeX, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.publishers.x as x_module

    post = video_post(tmp_path)
    (item,) = post.media
    monkeypatch.setattr(x_module, "CHUNK_BYTES", item.bytes // 3 + 1)  # three segments
    publisher = x_publisher(x_server, tmp_path)
    receipt = publisher.publish(post, "Today", post.media, "k1")
    publisher.close()
    calls = x_server.calls("/2/media/upload")
    commands = [
        r.part("command").text if r.method == "POST" else r.query["command"][0] for r in calls
    ]
    assert commands == [
        "INIT",
        "APPEND",
        "APPEND",
        "APPEND",
        "FINALIZE",
        "STATUS",
        "STATUS",
        "STATUS",
    ]
    init = calls[0]
    assert init.part("media_category").text == "tweet_video"
    assert init.part("media_type").text == "video/mp4"
    assert int(init.part("total_bytes").text) == item.bytes
    assert [int(r.part("segment_index").text) for r in calls[1:4]] == [0, 1, 2]
    (media_id,) = x_server.media
    assert x_server.chunked[media_id]["frames"] == 12  # the video arrived whole
    assert x_server.chunked[media_id]["video"]["codec"] == "h264"
    assert x_server.media[media_id]["alt"] == "The pool over the day"
    assert x_server.tweets[str(receipt.remote_id)]["media_ids"] == [media_id]


def test_x_processing_failure_is_permanent_and_posts_nothing(
    x_server: FakeX, tmp_path: Path
) -> None:
    x_server.fail_processing = True
    publisher = x_publisher(x_server, tmp_path)
    post = video_post(tmp_path)
    with pytest.raises(PermanentError, match="processing failed"):
        publisher.publish(post, "Today", post.media, "k1")
    publisher.close()
    assert x_server.tweets == {}


# -- webhook and MQTT --------------------------------------------------------------


def test_webhook_multipart_carries_the_video_and_its_poster(tmp_path: Path) -> None:
    with FakeWebhook() as hook:
        config = WebhookConfig.model_validate(
            {"id": "hook", "type": "webhook", "url": f"{hook.url}/hooks/a", "format": "multipart"}
        )
        publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
        post = video_post(tmp_path)
        publisher.publish(post, "Today", post.media, "k1")
        publisher.close()
    (request, _event) = hook.created[0]
    (item,) = post.media
    payload = json.loads(request.part("payload").data)
    (entry,) = payload["media"]
    assert entry["mime"] == "video/mp4"
    assert entry["duration"] == pytest.approx(3.0)
    media = request.part("media")
    assert (media.filename, media.content_type) == (entry["filename"], "video/mp4")
    assert media.data == item.path.read_bytes()
    poster = request.part("poster")
    assert poster.filename == entry["poster"]
    assert item.poster is not None
    assert poster.data == item.poster.read_bytes()


def test_mqtt_sends_the_video_path_not_its_bytes(
    broker: Broker, mqtt_topic: str, mqtt_subscribe: Any, tmp_path: Path
) -> None:
    sub = mqtt_subscribe(f"{mqtt_topic}/#")
    config = MqttConfig.model_validate(
        {"id": "bus", "type": "mqtt", "timeout": 3, "topic": mqtt_topic + "/post"}
    )
    settings = BrokerSettings(host=broker.host, port=broker.port, protocol=311)
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool", broker=settings))
    photo = jpeg(tmp_path, "photo.jpg", (64, 48), "A photo")
    post = video_post(tmp_path, photo)
    publisher.publish(post, "Today", post.media, "k1")
    publisher.close()
    messages = sub.wait_for(lambda m: len(m) >= 2)
    assert [m.topic for m in messages] == [f"{mqtt_topic}/post/image/1", f"{mqtt_topic}/post"]
    body = json.loads(messages[-1].payload)
    video, still = body["media"]
    (item, _photo) = post.media
    assert item.poster is not None
    assert video["path"] == str(item.path.resolve())
    assert video["poster_path"] == str(item.poster.resolve())
    assert "topic" not in video
    assert still["topic"] == f"{mqtt_topic}/post/image/1"
    assert all(len(m.payload) < item.bytes for m in messages if m.topic.endswith("image/1"))


# -- the pool example, end to end --------------------------------------------------


def test_pool_example_posts_its_daily_mp4_to_every_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from gateway.config import load_config
    from gateway.model import Reading
    from gateway.runtime.app import Gateway
    from tests.gwutil import archive_posts
    from tests.mediautil import deliver_all, scene_jpeg

    example = Path(__file__).resolve().parent.parent / "config" / "examples" / "pool.toml"
    with (
        FakeMastodon(TOKEN) as masto,
        FakePds("poolcam.example.com", PASSWORD) as pds,
        FakeX(X_KEYS) as x,
    ):
        text = example.read_text(encoding="utf-8")
        text = text.replace("enabled = false", "enabled = true")
        text = text.replace('"https://mastodon.example"', f'"{masto.url}"')
        text = text.replace('type = "bluesky"\n', f'type = "bluesky"\nservice = "{pds.url}"\n')
        text = text.replace('type = "x"\n', f'type = "x"\napi_base = "{x.url}"\n')
        path = tmp_path / "pool.toml"
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("MASTODON_TOKEN", TOKEN)
        monkeypatch.setenv("BLUESKY_APP_PASSWORD", PASSWORD)
        for name, value in X_KEYS.items():
            monkeypatch.setenv(f"X_{name.upper()}", value)
        config = load_config(path, overrides={"gateway": {"state_dir": str(tmp_path / "s")}})
        gateway = Gateway(config)
        for publisher in gateway.workers.values():
            if isinstance(publisher.publisher, XPublisher):
                publisher.publisher._sleep = lambda seconds: None
        now = datetime.now(UTC)
        gateway.state.update(Reading("water_temp", 26.5, "°C", now, "site/pool/temperature"))
        for k in range(48, 0, -1):
            at = now - timedelta(minutes=15 * k)
            frame = gateway.frames.store("underwater", scene_jpeg(at, (640, 480)), at)
            gateway.state.set_frame(frame)
        post = gateway.fire("daily")
        assert post is not None
        deliver_all(gateway)
        gateway.outbox.close()
        for worker in gateway.workers.values():
            worker.publisher.close()

    (record,) = archive_posts(tmp_path / "s")
    assert [m["mime"] for m in record["media"]] == ["image/png", "video/mp4"]  # chart + video
    (status,) = masto.statuses.values()
    assert [m["type"] for m in status["media_attachments"]] == ["gifv"]  # the video alone
    (media_id,) = [m["id"] for m in status["media_attachments"]]
    assert masto.media[media_id]["meta"]["original"]["frames"] == 48
    (sky,) = pds.records.values()
    assert sky["value"]["embed"]["$type"] == "app.bsky.embed.video"
    assert sky["value"]["embed"]["aspectRatio"] == {"width": 640, "height": 480}
    (tweet,) = x.tweets.values()
    (x_media,) = tweet["media_ids"]
    assert x.media[x_media]["category"] == "tweet_video"
    assert x.chunked[x_media]["frames"] == 48
