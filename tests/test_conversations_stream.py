"""Mastodon's streaming API for mentions: pushed, stored like polled ones, never missed.

Against a local server speaking Mastodon's streaming format (server-sent events:
``event: notification`` / ``data: {...}``, heartbeats) and polling API, and against
mastodon-mock's own ``/api/v1/streaming/user/notification``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config.conversations import ConversationsSection, ReplyConfig
from gateway.config.publishers import MastodonConfig
from gateway.conversations.answering import Conversations
from gateway.conversations.inbox import Inbox
from gateway.conversations.poller import MentionPoller
from gateway.outbox.delivery import DeliveryWorker
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import PublisherContext
from tests.fakes.mastodon_stream import MentionsFake
from tests.gwutil import wait_until

TEMP = ReplyConfig(id="temp", match=("warm",), text="Water is 24.5 °C, {{ asker }}.")


class Streamer:
    """A gateway's conversation pieces on one Mastodon account, its poller running."""

    def __init__(
        self,
        base_url: str,
        token: str,
        tmp: Path,
        *,
        interval: float = 3600.0,
        streaming: bool = True,
    ) -> None:
        config = MastodonConfig.model_validate(
            {
                "id": "masto",
                "type": "mastodon",
                "base_url": base_url,
                "access_token": token,
                "timeout": 5,
                "visibility": "public",
            }
        )
        self.publisher = build_publisher(config, PublisherContext(tmp, "pool"))
        self.outbox = Outbox(tmp / "gateway.db")
        self.inbox = Inbox(tmp / "gateway.db")
        conv = ConversationsSection.model_validate(
            {"enabled": True, "cooldown": "0s", "per_asker_hourly": 1000, "global_hourly": 1000}
        )
        self.conv = Conversations(conv, (TEMP,), self.inbox, self.outbox)
        self.poller = MentionPoller(
            self.publisher,  # type: ignore[arg-type]
            self.inbox,
            self.conv,
            interval,
            streaming=streaming,
            wake=lambda: self.worker.wake(),
        )
        self.worker = DeliveryWorker(self.outbox, self.publisher)

    def __enter__(self) -> Streamer:
        self.worker.start()
        self.poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.poller.stop()
        self.worker.stop()
        self.outbox.close()
        self.inbox.close()
        self.publisher.close()

    def answered(self) -> list[str]:
        return sorted(
            e["id"] for e in Inbox(self.inbox.path).recent(1000) if e["outcome"] == "answered"
        )


def test_a_streamed_mention_is_answered_without_waiting_for_a_poll(tmp_path: Path) -> None:
    with MentionsFake(heartbeat=0.2) as fake, Streamer(fake.base_url, "tok-alice", tmp_path) as gw:
        wait_until(lambda: gw.poller.stream_opens == 1 and fake.open_streams() == 1, timeout=10)
        polls = fake.requests.get("GET /api/v1/notifications", 0)
        assert polls == 1  # the one poll as the stream opened
        fake.send_raw(b'event: update\ndata: {"id": "5"}\n\n')  # not a notification
        fake.send_raw(b"event: delete\ndata: 5\n\n")
        fake.send_raw(b"event: notification\ndata: {not json\n\n")  # bad data: skipped
        asked = fake.mention("@pool how warm is it?")
        fav = fake.mention("@pool warm?", kind="favourite")  # not a mention
        reply = fake.wait_reply(asked, timeout=10)
        assert reply is not None
        assert reply.visibility == "public"
        assert reply.status.startswith("@bob Water is 24.5")
        # answered from the stream: the poll interval is an hour, and no poll ran
        assert fake.requests.get("GET /api/v1/notifications", 0) == polls
        assert gw.poller.streamed == 1
        assert fake.replies_to(fav) == []
    assert gw.answered() == [asked]


def test_after_the_stream_drops_a_poll_on_reconnect_catches_what_was_missed(
    tmp_path: Path,
) -> None:
    with MentionsFake(heartbeat=0.2) as fake, Streamer(fake.base_url, "tok", tmp_path) as gw:
        wait_until(lambda: fake.open_streams() == 1, timeout=10)
        first = fake.mention("@pool warm?")
        assert fake.wait_reply(first, timeout=10) is not None
        fake.drop_streams()
        # posted while no stream is open: only a poll can see it
        missed = fake.mention("@pool warm now?", author="carol", stream=False)
        wait_until(lambda: fake.open_streams() == 1, timeout=15)  # reconnected (backoff 1 s)
        assert fake.wait_reply(missed, timeout=10) is not None
        after = fake.mention("@pool still warm?", author="dan")
        assert fake.wait_reply(after, timeout=10) is not None
        assert fake.stream_connects == 2
        assert gw.poller.stream_drops == 1
    assert gw.answered() == sorted([first, missed, after])
    for sid in (first, missed, after):
        assert len(fake.replies_to(sid)) == 1  # polled and streamed, answered once


def test_a_mention_both_streamed_and_polled_is_stored_and_answered_once(tmp_path: Path) -> None:
    with MentionsFake(heartbeat=0.2) as fake:
        gw = Streamer(fake.base_url, "tok", tmp_path)
        asked = fake.mention("@pool warm?", stream=False)
        with gw:
            # the opening poll reads it; then the stream pushes the same notification
            wait_until(lambda: fake.open_streams() == 1, timeout=10)
            wait_until(lambda: fake.replies_to(asked), timeout=10)
            fake.send_raw(_event_for(fake, gw, asked))
            wait_until(lambda: gw.poller.streamed == 1, timeout=10)
            gw.poller.poll_once()
        assert len(fake.replies_to(asked)) == 1
        assert [e["id"] for e in Inbox(tmp_path / "gateway.db").recent(10)] == [asked]


def _event_for(fake: MentionsFake, gw: Streamer, status_id: str) -> bytes:
    """The notification event of ``status_id`` as the stream would send it."""
    import json

    response = httpx.get(f"{fake.base_url}/api/v1/notifications")
    (item,) = [n for n in response.json() if n["status"]["id"] == status_id]
    return f"event: notification\ndata: {json.dumps(item)}\n\n".encode()


def test_without_streaming_the_gateway_polls(tmp_path: Path) -> None:
    with (
        MentionsFake(streaming=False) as fake,
        Streamer(fake.base_url, "tok", tmp_path, interval=0.2) as gw,
    ):
        asked = fake.mention("@pool warm?")
        assert fake.wait_reply(asked, timeout=10) is not None
        wait_until(lambda: fake.requests.get("GET /api/v1/notifications", 0) >= 3, timeout=10)
        assert fake.stream_connects == 0
        assert gw.poller.streamed == 0
        # probed once, then polled (the next probe is ten minutes away)
        assert fake.requests["GET /api/v1/streaming/health"] == 1


def test_a_stream_refused_after_a_healthy_probe_falls_back_to_polling(tmp_path: Path) -> None:
    with MentionsFake() as fake:
        fake.refuse_stream = True
        with Streamer(fake.base_url, "tok", tmp_path, interval=0.2) as gw:
            asked = fake.mention("@pool warm?")
            assert fake.wait_reply(asked, timeout=10) is not None
            wait_until(lambda: fake.requests.get("GET /api/v1/notifications", 0) >= 3, timeout=10)
            # one attempt, then polling until the next probe, ten minutes away
            assert fake.requests["GET /api/v1/streaming/user/notification"] == 1
            assert gw.poller.stream_drops == 0


def test_streaming_off_in_the_config_never_touches_the_stream(tmp_path: Path) -> None:
    with (
        MentionsFake() as fake,
        Streamer(fake.base_url, "tok", tmp_path, interval=0.2, streaming=False),
    ):
        asked = fake.mention("@pool warm?")
        assert fake.wait_reply(asked, timeout=10) is not None
        assert "GET /api/v1/streaming/health" not in fake.requests
        assert fake.stream_connects == 0


def test_mastodon_mocks_notification_stream_answers_a_mention(tmp_path: Path) -> None:
    """mastodon-mock (an independent implementation) streams bob's mention of alice."""
    pytest.importorskip("mastodon_mock.testing.server")
    from mastodon_mock.testing.server import MockServer

    def as_bob(method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(
            method, f"{mock.base_url}{path}", headers={"Authorization": "Bearer bob_token"}, **kw
        )
        response.raise_for_status()
        return response.json()

    with MockServer() as mock, Streamer(mock.base_url, "alice_token", tmp_path) as gw:
        wait_until(lambda: gw.poller.stream_opens == 1, timeout=10)
        asked = as_bob("POST", "/api/v1/statuses", json={"status": "@alice warm?"})

        def replied() -> list[Any]:
            context = as_bob("GET", f"/api/v1/statuses/{asked['id']}/context")
            return list(context["descendants"])

        (reply,) = wait_until(replied, timeout=15)
        assert reply["in_reply_to_id"] == asked["id"]
        assert reply["account"]["username"] == "alice"
        assert gw.poller.streamed == 1  # pushed: the poll interval is an hour
