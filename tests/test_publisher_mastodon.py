"""The Mastodon publisher against a local fake of Mastodon's client API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import PermanentError, Post, RetryableError, new_post_id
from gateway.outbox.delivery import DeliveryWorker
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, Publisher, PublisherContext
from gateway.publishers.mastodon import MastodonConfig, MastodonPublisher
from tests.fakes import Fault
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.media import jpeg

TOKEN = "mastodon-token-do-not-log"


@pytest.fixture
def server() -> Iterator[FakeMastodon]:
    with FakeMastodon(TOKEN, max_characters=1000) as fake:
        yield fake


def build(
    server: FakeMastodon, tmp_path: Path, store: MemoryStore | None = None, **options: object
) -> MastodonPublisher:
    config = MastodonConfig.model_validate(
        {
            "id": "masto",
            "type": "mastodon",
            "base_url": server.url,
            "access_token": TOKEN,
            "timeout": 2,
            "media_poll_interval": 0.01,
            **options,
        }
    )
    ctx = PublisherContext(state_dir=tmp_path, gateway_name="poolcam", store=store or MemoryStore())
    return build_publisher(config, ctx)


def a_post(tmp_path: Path, n_images: int = 2, lang: str | None = "en") -> Post:
    media = tuple(
        jpeg(tmp_path, f"m{n}.jpg", (80, 60 + n), f"Underwater view {n}") for n in range(n_images)
    )
    return Post(new_post_id(), "hourly", datetime.now(UTC), "Water 24 °C", media, lang)


def test_publish_uploads_media_with_alt_text_then_posts_the_status(
    server: FakeMastodon, tmp_path: Path
) -> None:
    publisher = build(server, tmp_path, visibility="public", spoiler_text="pool stats")
    post = a_post(tmp_path)
    receipt = publisher.publish(post, "Water 24 °C #pool", post.media, "idem-1")
    publisher.close()

    uploads = server.calls("/api/v2/media", "POST")
    assert len(uploads) == 2
    for sent, item in zip(uploads, post.media, strict=True):
        assert sent.header("authorization") == f"Bearer {TOKEN}"
        file = sent.part("file")
        assert file.data == item.path.read_bytes()
        assert file.content_type == "image/jpeg"
        assert file.filename == item.path.name
        assert sent.part("description").text == item.alt
    (status,) = server.calls("/api/v1/statuses")
    assert status.header("idempotency-key") == "idem-1"
    assert status.json() == {
        "status": "Water 24 °C #pool",
        "visibility": "public",
        "media_ids": ["100", "101"],
        "sensitive": False,
        "spoiler_text": "pool stats",
        "language": "en",
    }
    (created,) = server.statuses.values()
    assert [m["description"] for m in created["media_attachments"]] == [m.alt for m in post.media]
    assert receipt.remote_id == created["id"]
    assert receipt.url == created["url"]


def test_text_only_post_sends_no_media_fields(server: FakeMastodon, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    post = a_post(tmp_path, 0, lang=None)
    publisher.publish(post, "hello", (), "idem-2")
    publisher.close()
    assert server.calls("/api/v1/statuses")[0].json() == {
        "status": "hello",
        "visibility": "unlisted",
    }


def test_202_upload_is_polled_until_processed(server: FakeMastodon, tmp_path: Path) -> None:
    server.processing_polls = 2
    publisher = build(server, tmp_path)
    post = a_post(tmp_path, 1)
    receipt = publisher.publish(post, "processing", post.media, "idem-3")
    publisher.close()
    polls = server.calls("/api/v1/media/100", "GET")
    assert len(polls) == 3  # 206, 206, then 200
    assert receipt.remote_id in server.statuses


def test_upload_still_processing_after_media_timeout_is_retryable(
    server: FakeMastodon, tmp_path: Path
) -> None:
    server.processing_polls = 10_000
    publisher = build(server, tmp_path, media_timeout=0.1)
    post = a_post(tmp_path, 1)
    with pytest.raises(RetryableError, match="still processing"):
        publisher.publish(post, "slow", post.media, "idem-4")
    publisher.close()
    assert not server.calls("/api/v1/statuses")


def test_limits_come_from_the_instance_once(server: FakeMastodon, tmp_path: Path) -> None:
    server.instance_config["media_attachments"]["description_limit"] = 900
    store = MemoryStore()
    publisher = build(server, tmp_path, store, spoiler_text="cw")
    assert publisher.capabilities.max_text == 500 - 2  # defaults: building asks nothing
    assert not server.requests
    publisher.prepare()  # what the delivery worker's thread does first
    caps = publisher.capabilities
    assert caps.max_text == 1000 - 2  # the content warning counts too
    assert caps.text_counting == "graphemes"
    assert caps.url_length == 23
    assert caps.max_images == 4
    assert caps.max_image_bytes == 16_777_216
    assert caps.max_image_pixels == 33_177_600
    assert caps.max_alt_text == 900
    assert caps.supports_language
    post = a_post(tmp_path, 0)
    publisher.publish(post, "one", (), "a")
    publisher.publish(post, "two", (), "b")
    assert publisher.capabilities == caps
    publisher.close()
    assert len(server.calls("/api/v2/instance")) == 1
    assert isinstance(publisher, Publisher)

    # A restart while the server is down uses the stored limits.
    server.reply_next(503, {"error": "down"})
    again = build(server, tmp_path, store, spoiler_text="cw")
    assert again.capabilities.max_alt_text == 900
    again.close()


def test_defaults_until_the_instance_answers(server: FakeMastodon, tmp_path: Path) -> None:
    server.fail_next(Fault("reset"))
    publisher = build(server, tmp_path)
    publisher.prepare()
    assert publisher.capabilities.max_text == 500  # Mastodon's default, for now
    publisher.prepare()  # no new request until the retry delay
    assert publisher.capabilities.max_text == 500
    assert len(server.calls("/api/v2/instance")) == 1
    publisher.close()


def test_retried_status_with_same_key_does_not_post_twice(
    server: FakeMastodon, tmp_path: Path
) -> None:
    publisher = build(server, tmp_path)
    post = a_post(tmp_path, 0)
    first = publisher.publish(post, "once", (), "same-key")
    second = publisher.publish(post, "once", (), "same-key")
    publisher.close()
    assert first == second
    assert len(server.statuses) == 1


def test_429_waits_until_x_ratelimit_reset(server: FakeMastodon, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    publisher.limits()
    reset = datetime.fromtimestamp(time.time() + 120, UTC).isoformat()
    server.reply_next(
        429,
        {"error": "Too many requests"},
        {"X-RateLimit-Reset": reset, "X-RateLimit-Remaining": "0"},
        path="/api/v1/statuses",
    )
    with pytest.raises(RetryableError, match="Too many requests") as caught:
        publisher.publish(a_post(tmp_path, 0), "limited", (), "k")
    publisher.close()
    assert caught.value.retry_after is not None
    assert 115 <= caught.value.retry_after <= 120


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        (Fault("reply"), RetryableError, "HTTP 500"),
        (Fault("reset"), RetryableError, "connection failed"),
        (Fault("slow", delay=2), RetryableError, "timed out"),
    ],
)
def test_transient_failures_are_retryable(
    server: FakeMastodon, tmp_path: Path, fault: Fault, error: type, text: str
) -> None:
    publisher = build(server, tmp_path, timeout=0.3)
    publisher.limits()
    if fault.kind == "reply":
        server.reply_next(500, {"error": "We're sorry, but something went wrong"})
    else:
        server.fail_next(fault)
    post = a_post(tmp_path, 1)
    with pytest.raises(error, match=text):
        publisher.publish(post, "x", post.media, "k")
    publisher.close()


def test_bad_token_is_permanent_and_secret_free(server: FakeMastodon, tmp_path: Path) -> None:
    server.token = "another-token"
    publisher = build(server, tmp_path)
    with pytest.raises(PermanentError, match="The access token is invalid") as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(publisher._config)


def test_rejected_status_is_permanent(server: FakeMastodon, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    publisher.limits()
    server.reply_next(422, {"error": "Validation failed: Text character limit of 500 exceeded"})
    with pytest.raises(PermanentError, match="character limit"):
        publisher.publish(a_post(tmp_path, 0), "x" * 600, (), "k")
    publisher.close()


def test_answer_without_an_id_is_retryable(server: FakeMastodon, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    publisher.limits()
    server.reply_next(200, {"unexpected": True}, path="/api/v1/statuses")
    with pytest.raises(RetryableError, match="answer lacks id"):
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()


def test_against_mastodon_mock_server(tmp_path: Path) -> None:
    """A second, independent Mastodon implementation (PyPI `mastodon-mock`), when installed."""
    pytest.importorskip("mastodon_mock.testing.server")
    import httpx
    from mastodon_mock.testing.server import MockServer

    with MockServer() as mock:
        config = MastodonConfig.model_validate(
            {
                "id": "m",
                "type": "mastodon",
                "base_url": mock.base_url,
                "access_token": "alice_token",
                "timeout": 5,
                "media_poll_interval": 0.05,
            }
        )
        publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
        post = a_post(tmp_path, 1)
        receipt = publisher.publish(post, "Water 24 °C #pool", post.media, "key-1")
        again = publisher.publish(post, "Water 24 °C #pool", post.media, "key-1")
        assert publisher.capabilities.max_text == 500
        publisher.close()
        status = httpx.get(
            f"{mock.base_url}/api/v1/statuses/{receipt.remote_id}",
            headers={"Authorization": "Bearer alice_token"},
        ).json()
    assert again == receipt
    assert status["language"] == "en"
    assert status["visibility"] == "unlisted"
    assert [m["description"] for m in status["media_attachments"]] == [post.media[0].alt]


@pytest.mark.parametrize(
    ("version", "v1_instance", "max_text"),
    [("3.5.3", True, 1000), ("3.3.0", True, 500), ("3.5.3", False, 500)],
    ids=["3.5-v1-configuration", "3.3-v1-without-configuration", "no-instance-info"],
)
def test_mastodon_3_without_v2_instance_falls_back_to_v1_then_defaults_and_posts(
    tmp_path: Path, version: str, v1_instance: bool, max_text: int
) -> None:
    with FakeMastodon(
        TOKEN, max_characters=1000, version=version, v1_instance=v1_instance
    ) as server:
        publisher = build(server, tmp_path)
        outbox = Outbox(tmp_path / "gateway.db")
        post = a_post(tmp_path, 1)
        outbox.add(post, {"masto": "Water 24 °C"})
        worker = DeliveryWorker(outbox, publisher)
        worker.step()
        (entry,) = outbox.history(10)
        outbox.close()
        publisher.close()
    assert entry["deliveries"]["masto"]["status"] == "sent"
    assert [r.json()["status"] for r in server.calls("/api/v1/statuses")] == ["Water 24 °C"]
    assert len(server.calls("/api/v2/instance")) == 1
    assert len(server.calls("/api/v1/instance")) == 1
    assert publisher.capabilities.max_text == max_text
