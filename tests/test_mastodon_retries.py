"""Mastodon: retries reuse uploads, outlive the Idempotency-Key, and respect the rate
limits before the 429 (issue 16, items 6-8).

Against the local fake (tests/fakes/mastodon.py: media ids that expire, keys kept an
hour, ``X-RateLimit-*`` counting down in ISO 8601) through the real DeliveryWorker and
a real outbox; the rate limit and the lookup of the account's own statuses also
against mastodon-mock (PyPI), an independent implementation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import Post, RateLimitedError, new_post_id
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, PublisherContext
from gateway.publishers.mastodon import MastodonConfig, MastodonPublisher
from tests.fakeclock import EpochClock
from tests.fakes import Fault
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.media import jpeg
from tests.fakes.server import Reply

TOKEN = "mastodon-token-do-not-log"


@pytest.fixture
def server() -> Iterator[FakeMastodon]:
    with FakeMastodon(TOKEN) as fake:
        yield fake


def build(base_url: str, tmp_path: Path, token: str = TOKEN) -> MastodonPublisher:
    config = MastodonConfig.model_validate(
        {
            "id": "masto",
            "type": "mastodon",
            "base_url": base_url,
            "access_token": token,
            "timeout": 5,
            "media_poll_interval": 0.01,
        }
    )
    ctx = PublisherContext(state_dir=tmp_path, gateway_name="pool", store=MemoryStore())
    built = build_publisher(config, ctx)
    assert isinstance(built, MastodonPublisher)
    return built


def setup(
    server: FakeMastodon, tmp_path: Path, n_images: int = 2
) -> tuple[DeliveryWorker, Outbox, Post, EpochClock]:
    media = tuple(jpeg(tmp_path, f"m{n}.jpg", (80, 60 + n), f"view {n}") for n in range(n_images))
    post = Post(new_post_id(), "r", datetime.now(UTC), "Water 24 °C", media, "en")
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(post, {"masto": "Water 24 °C https://example.org/pool?x=1\n\nmore"})
    clock = EpochClock()
    clock.now += 1
    policy = RetryPolicy(base_delay=2, max_attempts=5, jitter=0)
    return (
        DeliveryWorker(outbox, build(server.url, tmp_path), policy, clock=clock),
        outbox,
        post,
        clock,
    )


def status_of(outbox: Outbox) -> dict[str, object]:
    (entry,) = outbox.history(5)
    return dict(entry["deliveries"]["masto"])


def test_a_retry_reuses_the_uploads_of_the_first_attempt(
    server: FakeMastodon, tmp_path: Path
) -> None:
    worker, outbox, _post, clock = setup(server, tmp_path)
    server.fail_next(Fault("reply", Reply(503, {"error": "busy"}), path="/api/v1/statuses"))
    worker.step()  # uploads both images, then the status fails
    assert status_of(outbox)["status"] == "failed"
    clock.now += 60
    worker.step()
    worker.publisher.close()
    assert status_of(outbox)["status"] == "sent"
    assert len(server.calls("/api/v2/media", "POST")) == 2  # not 4
    (status,) = server.statuses.values()
    assert [m["id"] for m in status["media_attachments"]] == list(server.media)  # type: ignore[union-attr]


def test_a_retry_uploads_again_when_the_server_removed_the_uploads(
    server: FakeMastodon, tmp_path: Path
) -> None:
    worker, outbox, _post, clock = setup(server, tmp_path)
    server.fail_next(Fault("reply", Reply(503, {"error": "busy"}), path="/api/v1/statuses"))
    worker.step()
    server.expire_unattached_media()  # a day later the server cleaned them up
    clock.now += 60
    worker.step()
    worker.publisher.close()
    assert status_of(outbox)["status"] == "sent"
    assert len(server.calls("/api/v2/media", "POST")) == 4
    (status,) = server.statuses.values()
    assert len(status["media_attachments"]) == 2  # type: ignore[arg-type]


def test_a_retry_after_the_key_expired_finds_the_status_instead_of_posting_twice(
    server: FakeMastodon, tmp_path: Path
) -> None:
    worker, outbox, _post, clock = setup(server, tmp_path, n_images=0)
    server.fail_next(Fault("reset_after", path="/api/v1/statuses"))  # posted, answer lost
    worker.step()
    assert status_of(outbox)["status"] == "failed"
    assert len(server.statuses) == 1
    # A long outage: the next attempt comes two hours later; the key is forgotten.
    offset = 7200.0
    server.now = lambda: time.time() + offset
    worker.publisher._now = lambda: time.time() + offset  # type: ignore[attr-defined]
    clock.now += offset
    worker.step()
    worker.publisher.close()
    delivery = status_of(outbox)
    assert delivery["status"] == "sent"
    assert len(server.statuses) == 1  # not posted twice
    assert delivery["remote_id"] == next(iter(server.statuses))


def test_the_rate_limit_is_respected_before_the_429(server: FakeMastodon, tmp_path: Path) -> None:
    server.request_limit = 4  # instance, then one status each: the third post would be refused
    outbox = Outbox(tmp_path / "gateway.db")
    for n in range(4):
        outbox.add(
            Post(new_post_id(), "r", datetime.now(UTC), f"t{n}", (), "en"), {"masto": f"t{n}"}
        )
    clock = EpochClock()
    clock.now += 1
    worker = DeliveryWorker(outbox, build(server.url, tmp_path), RetryPolicy(jitter=0), clock=clock)
    for _ in range(4):
        worker.step()
    worker.publisher.close()
    history = {e["text"]: e["deliveries"]["masto"] for e in outbox.history(10)}
    outbox.close()
    assert [history[f"t{n}"]["status"] for n in range(4)] == ["sent", "sent", "sent", "failed"]
    assert history["t3"]["attempts"] == 0  # a wait, no failed attempt
    assert "rate limit" in str(history["t3"]["last_error"])
    assert not [r for r in server.requests if r.path == "/api/v1/statuses"][3:]  # no 429 met
    assert worker.waiting is not None
    assert 200 < worker.waiting[1] - time.time() <= 301  # until the window's ISO 8601 reset


def test_mastodon_mock_rate_limit_headers_slow_the_publisher_down(tmp_path: Path) -> None:
    """mastodon-mock counts X-RateLimit-Remaining down (epoch reset): no request meets a 429."""
    from mastodon_mock.config import RateLimitConfig
    from mastodon_mock.testing.server import MockServer, _default_config

    config = _default_config()
    config.ratelimit = RateLimitConfig(enabled=True, limit=3, window_seconds=300)
    with MockServer(config=config) as mock:
        publisher = build(mock.base_url, tmp_path, "alice_token")
        post = Post(new_post_id(), "r", datetime.now(UTC), "x", (), "en")
        publisher.publish(post, "first", (), "k1")  # instance + status: 1 left
        publisher.publish(post, "second", (), "k2")  # the last request of the window
        with pytest.raises(RateLimitedError) as caught:
            publisher.publish(post, "third", (), "k3")
        publisher.close()
    assert 200 < caught.value.wait <= 300


def test_mastodon_mock_own_status_is_found_after_the_key_expired(tmp_path: Path) -> None:
    """The lookup reads mastodon-mock's account statuses and its HTML ``content``."""
    import httpx
    from mastodon_mock.testing.server import MockServer

    text = "Water 24 °C & <warm>\nhttps://example.org/pool?x=1"
    with MockServer() as mock:
        # An earlier attempt posted it; its answer was lost (key "k1").
        httpx.post(
            f"{mock.base_url}/api/v1/statuses",
            json={"status": text},
            headers={"Authorization": "Bearer alice_token"},
        ).raise_for_status()
        publisher = build(mock.base_url, tmp_path, "alice_token")
        publisher._save_attempt("k1", {"first": time.time() - 60})
        publisher._now = lambda: time.time() + 7200  # two hours later
        post = Post(new_post_id(), "r", datetime.now(UTC), text, (), "en")
        receipt = publisher.publish(post, text, (), "k1")
        statuses = httpx.get(
            f"{mock.base_url}/api/v1/timelines/home",
            headers={"Authorization": "Bearer alice_token"},
        ).json()
        publisher.close()
    assert receipt.remote_id is not None
    assert len([s for s in statuses if s["account"]["username"] == "alice"]) == 1
