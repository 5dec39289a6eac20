"""Threads (``overflow = "thread"``) through the Mastodon, Bluesky and X fakes.

Each test runs a real outbox (it is also the publishers' durable store, as in the
gateway) and a real DeliveryWorker on a fake clock, and checks what the fake was
*sent*: every later part replies to the one before, media go with the first part
only, and a failure in the middle of a thread — even with the process restarted in
between — ends with the thread posted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Post, new_post_id
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import KeyValueStore, Publisher, PublisherContext
from gateway.runtime.loading import validate_config
from tests.fakeclock import EpochClock, drain
from tests.fakes.backends import BLUESKY, MASTODON, Backend, X
from tests.fakes.media import jpeg
from tests.fakes.server import FakeServer, Fault, Reply

THREAD_BACKENDS = (MASTODON, BLUESKY, X)
PUBLISHER = "svc"


@pytest.fixture(params=THREAD_BACKENDS, ids=lambda b: b.type)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
def fake(backend: Backend) -> Iterator[Any]:
    with backend.make_fake() as server:
        yield server


class FaultOnRecord:
    """A store that injects a fault right after part ``after`` of a thread is recorded."""

    def __init__(self, inner: KeyValueStore, inject: Any, after: int = 1) -> None:
        self._inner = inner
        self._inject = inject
        self._suffix = f":{after}"
        self.fired = False

    def get(self, key: str) -> str | None:
        return self._inner.get(key)

    def set(self, key: str, value: str) -> None:
        self._inner.set(key, value)
        if ":thread:" in key and key.endswith(self._suffix) and not self.fired:
            self.fired = True
            self._inject()


def build(backend: Backend, fake: FakeServer, tmp_path: Path, store: KeyValueStore) -> Publisher:
    entry = {"id": PUBLISHER, "timeout": 2, **backend.config(fake)}
    (config,) = validate_config({"publishers": [entry]}).publishers
    return build_publisher(config, PublisherContext(tmp_path, "pool", store=store))


def thread_post(tmp_path: Path) -> tuple[Post, tuple[str, ...]]:
    media = tuple(jpeg(tmp_path, f"m{n}.jpg", (80, 60), f"Pool view {n}") for n in range(2))
    post = Post(new_post_id(), "report", datetime.now(UTC), "long report", media, "en")
    parts = tuple(f"Pool report for {post.id}, part {n}/3" for n in (1, 2, 3))
    return post, parts


def deliver(
    backend: Backend,
    fake: FakeServer,
    tmp_path: Path,
    post: Post,
    parts: tuple[str, ...],
    outbox: Outbox,
    store: KeyValueStore | None = None,
) -> dict[str, Any]:
    """Drain the outbox through a fresh publisher; the delivery's history entry."""
    publisher = build(backend, fake, tmp_path, store or outbox)
    clock = EpochClock()
    worker = DeliveryWorker(outbox, publisher, RetryPolicy(base_delay=2, jitter=0), clock=clock)
    try:
        drain(worker, outbox, clock, PUBLISHER)
    finally:
        publisher.close()
    (entry,) = [e for e in outbox.history(10) if e["id"] == post.id]
    delivery: dict[str, Any] = entry["deliveries"][PUBLISHER]
    return delivery


# -- what each service was sent --------------------------------------------------


def assert_mastodon_thread(fake: Any, parts: tuple[str, ...], key: str) -> str:
    assert [s["content"] for s in fake.statuses.values()] == [f"<p>{p}</p>" for p in parts]
    ids = list(fake.statuses)
    assert [s["in_reply_to_id"] for s in fake.statuses.values()] == [None, ids[0], ids[1]]
    assert len(fake.calls("/api/v2/media", "POST")) == 2
    by_text = {}
    for request in fake.calls("/api/v1/statuses", "POST"):
        by_text[request.json()["status"]] = request
    first, second, third = (by_text[p] for p in parts)
    assert len(first.json()["media_ids"]) == 2
    assert "in_reply_to_id" not in first.json()
    for later, parent in ((second, ids[0]), (third, ids[1])):
        body = later.json()
        assert body["in_reply_to_id"] == parent
        assert "media_ids" not in body
        assert body["visibility"] == first.json()["visibility"]
        assert body["language"] == "en"
    assert [r.header("idempotency-key") for r in (first, second, third)] == [
        key,
        f"{key}-2",
        f"{key}-3",
    ]
    return str(ids[0])


def assert_bluesky_thread(fake: Any, parts: tuple[str, ...], key: str) -> str:
    records = list(fake.records.values())
    assert [r["value"]["text"] for r in records] == list(parts)
    first, second, third = records
    assert len(first["value"]["embed"]["images"]) == 2
    assert "reply" not in first["value"]
    root = {"uri": first["uri"], "cid": first["cid"]}
    assert second["value"]["reply"] == {"root": root, "parent": root}
    parent = {"uri": second["uri"], "cid": second["cid"]}
    assert third["value"]["reply"] == {"root": root, "parent": parent}
    assert "embed" not in second["value"]
    assert "embed" not in third["value"]
    rkeys = [r["uri"].rsplit("/", 1)[1] for r in records]
    assert rkeys == sorted(set(rkeys))  # distinct keys, in thread order
    assert len(fake.calls("repo.uploadBlob")) == 2
    return str(first["uri"])


def assert_x_thread(fake: Any, parts: tuple[str, ...], key: str) -> str:
    tweets = list(fake.tweets.items())
    assert [t["text"] for _, t in tweets] == list(parts)
    ids = [tweet_id for tweet_id, _ in tweets]
    assert [t["reply_to"] for _, t in tweets] == [None, ids[0], ids[1]]
    bodies = {r.json()["text"]: r.json() for r in fake.calls("/2/tweets", "POST")}
    first, second, third = (bodies[p] for p in parts)
    assert len(first["media"]["media_ids"]) == 2
    assert "reply" not in first
    assert second["reply"] == {"in_reply_to_tweet_id": ids[0]}
    assert "media" not in second
    assert third["reply"] == {"in_reply_to_tweet_id": ids[1]}
    assert "media" not in third
    assert len(fake.calls("/2/media/upload")) == 2
    return str(ids[0])


CHECKS = {
    "mastodon": assert_mastodon_thread,
    "bluesky": assert_bluesky_thread,
    "x": assert_x_thread,
}


def test_thread_is_a_chain_of_replies_with_media_on_the_first(
    backend: Backend, fake: Any, tmp_path: Path
) -> None:
    post, parts = thread_post(tmp_path)
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(post, {PUBLISHER: parts[0]}, threads={PUBLISHER: parts})
    try:
        delivery = deliver(backend, fake, tmp_path, post, parts, outbox)
    finally:
        outbox.close()
    assert delivery["status"] == "sent"
    assert delivery["attempts"] == 1
    first_id = CHECKS[backend.type](fake, parts, f"{post.id}-{PUBLISHER}")
    assert delivery["remote_id"] == first_id  # the receipt is the first part's
    assert not fake.errors


def test_failure_on_part_two_resumes_after_a_restart_without_duplicates(
    backend: Backend, fake: Any, tmp_path: Path
) -> None:
    post, parts = thread_post(tmp_path)
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(post, {PUBLISHER: parts[0]}, threads={PUBLISHER: parts})
    fault = Fault("reply", Reply(500, {"error": "boom"}), path=backend.create_path)
    store = FaultOnRecord(outbox, lambda: fake.fail_next(fault))
    publisher = build(backend, fake, tmp_path, store)
    worker = DeliveryWorker(outbox, publisher, RetryPolicy(base_delay=2, jitter=0))
    worker.step()  # part 1 posted, part 2 refused: the delivery fails
    publisher.close()
    (entry,) = outbox.history(1)
    assert entry["deliveries"][PUBLISHER]["status"] == "failed"
    assert len(backend.created_texts(fake)) == 1
    outbox.close()

    # A new process: the store is the same SQLite file, reopened.
    outbox = Outbox(tmp_path / "gateway.db")
    try:
        delivery = deliver(backend, fake, tmp_path, post, parts, outbox)
    finally:
        outbox.close()
    assert store.fired
    assert delivery["status"] == "sent"
    assert delivery["attempts"] == 2
    CHECKS[backend.type](fake, parts, f"{post.id}-{PUBLISHER}")
    creates_of_part_one = [
        r for r in fake.calls(backend.create_path, "POST") if parts[0].encode() in r.body
    ]
    assert len(creates_of_part_one) == 1  # the retry never asked for part 1 again
    assert not fake.errors


def test_answer_lost_on_part_two_posts_it_once(backend: Backend, fake: Any, tmp_path: Path) -> None:
    # Part 2 is created, but the answer is lost, so its id is never recorded.
    post, parts = thread_post(tmp_path)
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(post, {PUBLISHER: parts[0]}, threads={PUBLISHER: parts})
    fault = Fault("reset_after", path=backend.create_path)
    store = FaultOnRecord(outbox, lambda: fake.fail_next(fault))
    try:
        delivery = deliver(backend, fake, tmp_path, post, parts, outbox, store)
    finally:
        outbox.close()
    assert store.fired
    assert delivery["status"] == "sent"
    assert sorted(backend.created_texts(fake)) == sorted(
        [f"<p>{p}</p>" for p in parts] if backend.type == "mastodon" else parts
    )
    if backend.type == "x":
        # X has no idempotency key: the retried part 2 is refused as a duplicate, its
        # id is unknown, so part 3 replies to part 1 (the thread still hangs together).
        ids = list(fake.tweets)
        assert [t["reply_to"] for t in fake.tweets.values()] == [None, ids[0], ids[0]]
    else:
        CHECKS[backend.type](fake, parts, f"{post.id}-{PUBLISHER}")
    assert not fake.errors
