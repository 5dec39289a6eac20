"""Hostile HTTP services: rate-limit answers out of bounds, odd replies, echoed secrets.

A real outbox, a real DeliveryWorker on a fake clock (waits cost no time) and a local
webhook receiver that answers what a hostile or broken service would.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import Post, new_post_id
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, PublisherContext
from gateway.runtime.hass import state_payload
from gateway.runtime.health import HealthStore
from gateway.runtime.loading import load_config, validate_config
from tests.fakeclock import EpochClock, drain
from tests.fakes.server import Recorded, Reply
from tests.fakes.webhook import FakeWebhook
from tests.gwutil import cli


@pytest.fixture
def hook() -> Iterator[FakeWebhook]:
    with FakeWebhook() as fake:
        yield fake


def setup(
    hook: FakeWebhook, tmp_path: Path, clock: EpochClock, n_posts: int = 2, **options: object
) -> tuple[DeliveryWorker, Outbox, list[Post]]:
    entry = {"id": "hook", "type": "webhook", "url": f"{hook.url}/hooks/abc", **options}
    (config,) = validate_config({"publishers": [entry]}).publishers
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool", store=MemoryStore()))
    outbox = Outbox(tmp_path / "gateway.db")
    created = datetime.fromtimestamp(clock.now, UTC)
    posts = [Post(new_post_id(), "r", created, f"post {n}", (), "en") for n in range(n_posts)]
    for post in posts:
        outbox.add(post, {"hook": post.text})
    clock.now = time.time()  # the deliveries are due now
    policy = RetryPolicy.for_publisher(config, RetryPolicy(jitter=0))
    return DeliveryWorker(outbox, publisher, policy, clock=clock), outbox, posts


def run_until_idle(worker: DeliveryWorker, outbox: Outbox, clock: EpochClock) -> list[float]:
    """Step the worker (moving the clock by each wait) until nothing is open."""
    return drain(worker, outbox, clock, "hook", steps=200)


def test_a_retry_after_of_thirty_years_waits_at_most_max_delay(
    hook: FakeWebhook, tmp_path: Path
) -> None:
    clock = EpochClock()
    worker, outbox, posts = setup(hook, tmp_path, clock)
    hook.reply_next(429, {"error": "slow down"}, {"Retry-After": "999999999"}, times=3)
    start = clock.now
    waits = run_until_idle(worker, outbox, clock)
    history = {e["id"]: e["deliveries"]["hook"]["status"] for e in outbox.history(10)}
    worker.publisher.close()
    outbox.close()
    assert max(waits) <= RetryPolicy().max_delay
    assert all(status == "sent" for status in history.values())
    # Three refusals cost at most three hours, not until 2058; the next post followed.
    assert clock.now - start <= 3 * RetryPolicy().max_delay + 1
    assert [request.json()["id"] for request, _ in hook.created] == [p.id for p in posts]


def test_a_retry_after_beyond_give_up_after_ends_the_delivery_when_give_up_after_says(
    hook: FakeWebhook, tmp_path: Path
) -> None:
    clock = EpochClock()
    worker, outbox, _posts = setup(hook, tmp_path, clock, n_posts=1, give_up_after="2h")
    hook.reply_next(429, {"error": "slow down"}, {"Retry-After": "999999999"}, times=1000)
    start = clock.now
    run_until_idle(worker, outbox, clock)
    (entry,) = outbox.history(10)
    worker.publisher.close()
    outbox.close()
    assert entry["deliveries"]["hook"]["status"] == "dead"
    assert clock.now - start <= 2 * 3600 + RetryPolicy().max_delay


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "0"},
        {"X-RateLimit-Reset": "2001-01-01T00:00:00Z"},  # Mastodon style, in the past
        {"Retry-After": "Mon, 01 Jan 2001 00:00:00 GMT"},
    ],
    ids=["retry-after-0", "reset-in-the-past", "http-date-in-the-past"],
)
def test_a_retry_after_of_zero_or_the_past_never_retries_faster_than_the_backoff(
    hook: FakeWebhook, tmp_path: Path, headers: dict[str, str]
) -> None:
    clock = EpochClock()
    worker, outbox, _posts = setup(hook, tmp_path, clock, n_posts=1)
    hook.reply_next(429, {"error": "slow down"}, headers, times=25)
    waits = run_until_idle(worker, outbox, clock)
    (entry,) = outbox.history(10)
    worker.publisher.close()
    outbox.close()
    policy = RetryPolicy(jitter=0)
    # Each wait is at least the backoff of its attempt: 5 s, 10 s, 20 s, ... capped.
    assert waits[:6] == [policy.delay(n) for n in range(1, 7)]
    # 20 attempts are spread over hours, not made within a second.
    assert sum(waits) >= sum(policy.delay(n) for n in range(1, 20))
    assert entry["deliveries"]["hook"]["status"] == "dead"  # max_attempts still applies
    assert len(hook.calls("/hooks/")) == 20


@pytest.mark.parametrize(
    "answer",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b'{"id": "' + b"x" * 3_000_000 + b'"}',
        b"\xff\xfe not json",
    ],
    ids=["100000-brackets", "50000-objects", "3-MB-answer", "not-utf8"],
)
def test_an_odd_answer_from_a_receiver_that_took_the_post_is_never_a_retry(
    hook: FakeWebhook, tmp_path: Path, answer: bytes
) -> None:
    clock = EpochClock()
    worker, outbox, posts = setup(hook, tmp_path, clock)
    hook.reply_next(200, answer, path="/hooks/")
    run_until_idle(worker, outbox, clock)
    history = {e["id"]: e["deliveries"]["hook"] for e in outbox.history(10)}
    worker.publisher.close()
    outbox.close()
    assert [h["status"] for h in history.values()] == ["sent", "sent"]
    assert worker.failures == 0
    # Each post reached the receiver once: no duplicate from a retry.
    assert [r.json()["id"] for r in hook.calls("/hooks/")] == [p.id for p in posts]


class EchoingWebhook(FakeWebhook):
    """A receiver whose receipt is the request's own URL, token and all."""

    def _receive(self, request: Recorded, match: re.Match[str]) -> Reply:
        super()._receive(request, match)
        query = "&".join(f"{k}={v[0]}" for k, v in request.query.items())
        return Reply(200, {"id": request.path, "url": f"{self.url}{request.path}?{query}"})


def test_a_receipt_echoing_the_secret_url_is_stored_and_shown_masked(tmp_path: Path) -> None:
    token = "whsec-9f8e7d6c5b4a39281706"
    path_token = "T0KEN-IN-THE-PATH-77aa1122"
    with EchoingWebhook() as hook:
        url = f"{hook.url}/hooks/{path_token}?token={token}"
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[gateway]\nstate_dir = "{tmp_path}"\n\n'
            f'[[publishers]]\nid = "hook"\ntype = "webhook"\nurl = "${{HOOK_URL}}"\n',
            encoding="utf-8",
        )
        env = {**os.environ, "HOOK_URL": url}
        os.environ["HOOK_URL"] = url
        try:
            (publisher_config,) = load_config(config).publishers
        finally:
            del os.environ["HOOK_URL"]
        publisher = build_publisher(
            publisher_config, PublisherContext(tmp_path, "pool", store=MemoryStore())
        )
        outbox = Outbox(tmp_path / "gateway.db")
        post = Post(new_post_id(), "r", datetime.now(UTC), "hello", (), "en")
        outbox.add(post, {"hook": "hello"})
        DeliveryWorker(outbox, publisher).step()
        publisher.close()
        outbox.close()
        assert len(hook.created) == 1
    health = HealthStore(tmp_path / "gateway.db")
    retained = state_payload(0.0, health.summary())
    health.close()
    shown = cli("history", "--json", "-c", str(config), env=env)
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)
    db = sqlite3.connect(tmp_path / "gateway.db")
    (row,) = db.execute("SELECT url, remote_id FROM deliveries").fetchall()
    db.close()
    assert entry["deliveries"]["hook"]["status"] == "sent"
    for text in (json.dumps(row), shown.stdout, shown.stderr, retained):
        assert token not in text
        assert path_token not in text
    assert "***" in (row[0] or "")
