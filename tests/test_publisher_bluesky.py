"""The Bluesky publisher against a local fake PDS."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import Post, PublisherPausedError, RetryableError, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, Publisher, PublisherContext
from gateway.publishers.bluesky import BlueskyConfig, BlueskyPublisher, record_key, text_facets
from tests.fakes.bluesky import FakePds
from tests.fakes.media import jpeg

PASSWORD = "app-pass-do-not-log"
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
TEXT = "Zażółć 🐟 Вода 24° https://example.org/pool?x=1. #poolcam_live!"


@pytest.fixture
def server() -> Iterator[FakePds]:
    with FakePds("poolcam.test", PASSWORD) as fake:
        yield fake


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def build(
    server: FakePds, tmp_path: Path, store: MemoryStore, **options: object
) -> BlueskyPublisher:
    config = BlueskyConfig.model_validate(
        {
            "id": "sky",
            "type": "bluesky",
            "handle": "poolcam.test",
            "app_password": PASSWORD,
            "service": server.url,
            "timeout": 2,
            **options,
        }
    )
    return build_publisher(
        config, PublisherContext(state_dir=tmp_path, gateway_name="pool", store=store)
    )


def a_post(tmp_path: Path, n_images: int = 2) -> Post:
    media = tuple(
        jpeg(tmp_path, f"b{n}.jpg", (120, 90 - n * 30), f"Basen {n} — widok")
        for n in range(n_images)
    )
    return Post(
        new_post_id(), "hourly", datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC), TEXT, media, "pl"
    )


def test_publish_uploads_blobs_and_creates_the_record(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    publisher = build(server, tmp_path, store)
    post = a_post(tmp_path)
    receipt = publisher.publish(post, TEXT, post.media, "idem")
    publisher.close()

    (login,) = server.calls("createSession")
    assert login.json() == {"identifier": "poolcam.test", "password": PASSWORD}
    uploads = server.calls("uploadBlob")
    assert [u.body for u in uploads] == [m.path.read_bytes() for m in post.media]
    assert {u.header("content-type") for u in uploads} == {"image/jpeg"}
    (create,) = server.calls("createRecord")
    body = create.json()
    assert body["repo"] == server.did
    assert body["collection"] == "app.bsky.feed.post"
    assert body["rkey"] == record_key(post.id)
    record = body["record"]
    assert record["$type"] == "app.bsky.feed.post"
    assert record["text"] == TEXT
    assert record["langs"] == ["pl"]
    assert record["createdAt"] == "2026-07-01T12:00:05.000Z"
    images = record["embed"]["images"]
    assert record["embed"]["$type"] == "app.bsky.embed.images"
    assert [i["alt"] for i in images] == [m.alt for m in post.media]
    assert [i["aspectRatio"] for i in images] == [
        {"width": 120, "height": 90},
        {"width": 120, "height": 60},
    ]
    assert [i["image"]["ref"]["$link"] for i in images] == list(server.blobs)
    uri = f"at://{server.did}/app.bsky.feed.post/{record_key(post.id)}"
    assert receipt.remote_id == uri
    assert receipt.url == f"https://bsky.app/profile/{server.did}/post/{record_key(post.id)}"
    assert isinstance(publisher, Publisher)


def test_facets_use_utf8_byte_offsets(server: FakePds, tmp_path: Path, store: MemoryStore) -> None:
    publisher = build(server, tmp_path, store)
    publisher.publish(a_post(tmp_path, 0), TEXT, (), "idem")
    publisher.close()
    facets = server.calls("createRecord")[0].json()["record"]["facets"]

    raw = TEXT.encode("utf-8")
    link = b"https://example.org/pool?x=1"  # the final '.' is punctuation, not the link
    tag = b"#poolcam_live"
    assert facets == [
        {
            "index": {"byteStart": raw.index(link), "byteEnd": raw.index(link) + len(link)},
            "features": [
                {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.org/pool?x=1"}
            ],
        },
        {
            "index": {"byteStart": raw.index(tag), "byteEnd": raw.index(tag) + len(tag)},
            "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "poolcam_live"}],
        },
    ]
    # Multi-byte characters come first, so byte and character offsets differ.
    assert raw.index(link) != TEXT.index("https")
    start, end = facets[0]["index"]["byteStart"], facets[0]["index"]["byteEnd"]
    assert raw[start:end].decode() == "https://example.org/pool?x=1"


def test_text_facets_edge_cases() -> None:
    assert text_facets("no links here") == []
    text = "#start (see https://en.wikipedia.org/wiki/Pool_(game)) https://x.io/#frag #42 #ok."
    found = [(f["features"][0].get("uri") or f["features"][0]["tag"]) for f in text_facets(text)]
    assert found == [
        "start",
        # as the official client: a ")" after a URL holding a "(" stays in the link
        "https://en.wikipedia.org/wiki/Pool_(game))",
        "https://x.io/#frag",
        "ok",
    ]


def test_session_is_stored_and_a_new_instance_refreshes_it(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    first = build(server, tmp_path, store)
    first.publish(a_post(tmp_path, 0), "one", (), "k1")
    first.close()
    saved = json.loads(store.get("sky:bluesky:session") or "{}")
    assert saved["did"] == server.did
    assert saved["refresh_jwt"] in server.refresh

    second = build(server, tmp_path, store)
    second.publish(a_post(tmp_path, 0), "two", (), "k2")
    second.close()
    assert len(server.calls("createSession")) == 1
    (refresh,) = server.calls("refreshSession")
    assert refresh.header("authorization") == f"Bearer {saved['refresh_jwt']}"
    renewed = json.loads(store.get("sky:bluesky:session") or "{}")
    assert renewed["refresh_jwt"] != saved["refresh_jwt"]
    assert server.calls("createRecord")[-1].header("authorization") == (
        f"Bearer {renewed['access_jwt']}"
    )


def test_expired_access_token_is_refreshed_and_the_call_repeated(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    publisher = build(server, tmp_path, store)
    publisher.publish(a_post(tmp_path, 0), "one", (), "k1")
    server.expire_access_tokens()
    post = a_post(tmp_path, 1)
    receipt = publisher.publish(post, "two", post.media, "k2")
    publisher.close()
    assert len(server.calls("createSession")) == 1
    assert len(server.calls("refreshSession")) == 1
    assert len(server.calls("uploadBlob")) == 2  # the expired attempt, then the retry
    assert receipt.remote_id is not None
    assert len(server.records) == 2


def test_revoked_refresh_token_logs_in_again(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    first = build(server, tmp_path, store)
    first.publish(a_post(tmp_path, 0), "one", (), "k1")
    first.close()
    server.refresh.clear()
    server.expire_access_tokens()
    publisher = build(server, tmp_path, store)
    publisher.publish(a_post(tmp_path, 0), "two", (), "k2")
    publisher.close()
    assert len(server.calls("createSession")) == 2


def test_record_key_is_a_tid_derived_from_the_post_id() -> None:
    ids = [new_post_id() for _ in range(50)]
    keys = [record_key(i) for i in ids]
    assert all(TID.match(k) for k in keys)
    assert keys == [record_key(i) for i in ids]  # deterministic
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)  # time-ordered like the posts
    assert TID.match(record_key("not-a-ulid"))


def test_retried_create_returns_the_existing_record(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    publisher = build(server, tmp_path, store)
    post = a_post(tmp_path, 0)
    first = publisher.publish(post, "once", (), "k")
    # The answer was lost; the delivery worker tries again with the same post.
    second = publisher.publish(post, "once", (), "k")
    publisher.close()
    assert first == second
    assert len(server.records) == 1
    assert [c.json()["rkey"] for c in server.calls("createRecord")] == [record_key(post.id)] * 2
    assert len(server.calls("getRecord")) == 1


def test_create_failure_without_a_record_stays_retryable(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    publisher = build(server, tmp_path, store)
    server.reply_next(502, b"bad gateway", path="createRecord")
    with pytest.raises(RetryableError, match="HTTP 502"):
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert server.records == {}


def test_rate_limit_uses_ratelimit_reset(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    publisher = build(server, tmp_path, store)
    reset = int(time.time()) + 300
    server.reply_next(
        429,
        {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
        {
            "ratelimit-limit": "30",
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(reset),
            "ratelimit-policy": "30;w=300",
        },
        path="createSession",
    )
    with pytest.raises(RetryableError, match="RateLimitExceeded") as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert caught.value.retry_after is not None
    assert 295 <= caught.value.retry_after <= 300


def test_wrong_app_password_pauses_and_is_secret_free(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    server.password = "something-else"
    publisher = build(server, tmp_path, store)
    with pytest.raises(PublisherPausedError, match="Invalid identifier or password") as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(publisher._config)
    assert store.get("sky:bluesky:session") is None


def test_session_repr_hides_tokens(server: FakePds, tmp_path: Path, store: MemoryStore) -> None:
    publisher = build(server, tmp_path, store)
    publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    saved = json.loads(store.get("sky:bluesky:session") or "{}")
    text = repr(publisher._session)
    assert server.did in text
    assert saved["access_jwt"] not in text
    assert saved["refresh_jwt"] not in text


def test_mentions_resolve_through_the_pds_and_are_cached(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    server.handles["sensor.bsky.social"] = "did:plc:sensor0000000000000000000"
    publisher = build(server, tmp_path, store)
    now = [1000.0]
    publisher._clock = lambda: now[0]
    text = "Hi @sensor.bsky.social and @gone.bsky.social: 24°"
    for n in range(2):
        post = Post(new_post_id(), "r", datetime(2026, 7, 1, 12, n, tzinfo=UTC), text, (), "en")
        publisher.publish(post, text, (), "k")
    assert len(server.calls("resolveHandle")) == 2  # one per handle, then cached
    now[0] += 3601  # past the cache lifetime: asked again
    post = Post(new_post_id(), "r", datetime(2026, 7, 1, 12, 5, tzinfo=UTC), text, (), "en")
    publisher.publish(post, text, (), "k")
    publisher.close()
    assert len(server.calls("resolveHandle")) == 4
    record = server.calls("createRecord")[-1].json()["record"]
    # only the handle the PDS knows is a mention; the other stays plain text
    assert record["facets"] == [
        {
            "index": {"byteStart": 3, "byteEnd": 22},
            "features": [
                {
                    "$type": "app.bsky.richtext.facet#mention",
                    "did": "did:plc:sensor0000000000000000000",
                }
            ],
        }
    ]


def test_a_revoked_app_password_pauses_after_the_session_ends(
    server: FakePds, tmp_path: Path, store: MemoryStore
) -> None:
    publisher = build(server, tmp_path, store)
    publisher.publish(a_post(tmp_path, 0), "one", (), "k1")
    server.revoke_app_password("a-new-app-password")
    # the access token stops working, the refresh token too, and the login is refused
    with pytest.raises(PublisherPausedError, match="refused the login"):
        publisher.publish(a_post(tmp_path, 0), "two", (), "k2")
    publisher.close()
    assert [c.path for c in server.calls("xrpc")][-3:] == [
        "/xrpc/com.atproto.repo.createRecord",
        "/xrpc/com.atproto.server.refreshSession",
        "/xrpc/com.atproto.server.createSession",
    ]
