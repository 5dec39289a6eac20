"""The X publisher against a local fake of API v2 that verifies OAuth 1.0a signatures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import PermanentError, Post, Receipt, RetryableError, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, Publisher, PublisherContext
from gateway.publishers.x import XConfig, XPublisher
from tests.fakes import Fault
from tests.fakes.media import jpeg
from tests.fakes.x import FakeX

KEYS = {
    "consumer_key": "ck-app-key-1234",
    "consumer_secret": "cs-app-secret-do-not-log",
    "access_token": "at-1234-user-token",
    "access_token_secret": "ats-user-secret-do-not-log",
}


@pytest.fixture
def server() -> Iterator[FakeX]:
    with FakeX(KEYS) as fake:
        yield fake


def build(
    server: FakeX, tmp_path: Path, store: MemoryStore | None = None, **options: object
) -> XPublisher:
    config = XConfig.model_validate(
        {"id": "x", "type": "x", "api_base": server.url, "timeout": 2, **KEYS, **options}
    )
    ctx = PublisherContext(state_dir=tmp_path, gateway_name="pool", store=store or MemoryStore())
    return build_publisher(config, ctx)


def a_post(tmp_path: Path, n_images: int = 2) -> Post:
    media = tuple(
        jpeg(tmp_path, f"x{n}.jpg", (100 + n, 75), f"Pool view {n}" if n == 0 else "")
        for n in range(n_images)
    )
    return Post(new_post_id(), "hourly", datetime.now(UTC), "Water 24 °C", media, "en")


def test_publish_uploads_media_sets_alt_text_and_posts(server: FakeX, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    post = a_post(tmp_path)
    receipt = publisher.publish(post, "Water 24 °C 🐟 #pool", post.media, "idem")
    publisher.close()

    assert server.signature_failures == 0
    assert len(server.requests) == 4  # two uploads, one alt text (the second has none), the post
    for sent in server.requests:
        auth = sent.header("authorization") or ""
        assert auth.startswith("OAuth ")
        assert 'oauth_signature_method="HMAC-SHA1"' in auth
        assert f'oauth_consumer_key="{KEYS["consumer_key"]}"' in auth
    uploads = server.calls("/2/media/upload")
    for sent, item in zip(uploads, post.media, strict=True):
        assert sent.part("media").data == item.path.read_bytes()
        assert sent.part("media").content_type == "image/jpeg"
        assert sent.part("media_category").text == "tweet_image"
    first_id, second_id = list(server.media)
    (metadata,) = server.calls("/2/media/metadata")
    assert metadata.json() == {"id": first_id, "metadata": {"alt_text": {"text": "Pool view 0"}}}
    (tweet,) = server.calls("/2/tweets")
    assert tweet.json() == {
        "text": "Water 24 °C 🐟 #pool",
        "media": {"media_ids": [first_id, second_id]},
    }
    (tweet_id,) = server.tweets
    assert receipt == Receipt(tweet_id, f"https://x.com/i/web/status/{tweet_id}")
    assert isinstance(publisher, Publisher)


def test_text_only_post_has_no_media_field(server: FakeX, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    publisher.publish(a_post(tmp_path, 0), "just text", (), "idem")
    publisher.close()
    assert server.calls("/2/tweets")[0].json() == {"text": "just text"}


def test_server_rejects_a_wrong_signature(server: FakeX, tmp_path: Path) -> None:
    publisher = build(server, tmp_path, consumer_secret="wrong-secret")
    with pytest.raises(PermanentError, match="HTTP 401") as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "idem")
    publisher.close()
    assert server.signature_failures == 1
    assert not server.tweets
    for secret in KEYS.values():
        assert secret not in str(caught.value)
    assert "wrong-secret" not in repr(publisher._config)


def test_duplicate_refusal_of_a_retry_is_a_receipt(server: FakeX, tmp_path: Path) -> None:
    store = MemoryStore()
    publisher = build(server, tmp_path, store)
    post = a_post(tmp_path, 0)
    first = publisher.publish(post, "same text", (), "idem-1")
    again = publisher.publish(post, "same text", (), "idem-1")
    assert again == first  # the id is remembered from the first attempt
    # Another post with the same text (its first attempt): already there from the
    # earlier post, so it is refused for good, not recorded as sent.
    with pytest.raises(PermanentError, match="duplicate content"):
        publisher.publish(post, "same text", (), "idem-other")
    publisher.close()
    assert len(server.tweets) == 1


def test_429_waits_until_x_rate_limit_reset(server: FakeX, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    reset = int(time.time()) + 900
    server.reply_next(
        429,
        {
            "title": "Too Many Requests",
            "detail": "Too Many Requests",
            "type": "about:blank",
            "status": 429,
        },
        {
            "x-rate-limit-limit": "17",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(reset),
        },
    )
    with pytest.raises(RetryableError, match="Too Many Requests") as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "idem")
    publisher.close()
    assert caught.value.retry_after is not None
    assert 895 <= caught.value.retry_after <= 900


def test_other_403_is_permanent(server: FakeX, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    server.reply_next(
        403,
        {
            "title": "Forbidden",
            "type": "about:blank",
            "status": 403,
            "detail": "You are not permitted to perform this action.",
        },
    )
    with pytest.raises(PermanentError, match="not permitted"):
        publisher.publish(a_post(tmp_path, 0), "x", (), "idem")
    publisher.close()


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        (Fault("reset", path="/2/tweets"), "connection failed"),
        (Fault("slow", delay=2, path="/2/media/upload"), "timed out"),
    ],
)
def test_network_failures_are_retryable(
    server: FakeX, tmp_path: Path, fault: Fault, text: str
) -> None:
    publisher = build(server, tmp_path, timeout=0.3)
    server.fail_next(fault)
    post = a_post(tmp_path, 1)
    with pytest.raises(RetryableError, match=text):
        publisher.publish(post, "x", post.media, "idem")
    publisher.close()


def test_server_error_is_retryable(server: FakeX, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    server.reply_next(503, {"title": "Service Unavailable"}, {"Retry-After": "30"})
    with pytest.raises(RetryableError, match="HTTP 503") as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "idem")
    publisher.close()
    assert caught.value.retry_after == 30
