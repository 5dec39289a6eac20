"""Conversations on Bluesky (issue 18): mentions read through the PDS's AppView
proxy, stored, answered once as real replies with a DID mention facet.

The fake PDS (tests/fakes/bluesky.py) speaks listNotifications with cursor paging,
updateSeen, getPosts and createRecord; every test asserts what was sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.compose.textfit import graphemes
from gateway.config.conversations import ConversationsSection, ReplyConfig
from gateway.conversations.answering import Conversations
from gateway.conversations.inbox import Inbox
from gateway.conversations.poller import MentionPoller
from gateway.demo.broker import Broker
from gateway.outbox.delivery import DeliveryWorker
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import PublisherContext
from gateway.publishers.bluesky import APPVIEW_PROXY, BlueskyConfig, BlueskyPublisher
from gateway.publishers.x import XConfig
from tests.fakes.bluesky import FakePds
from tests.fakes.server import Fault
from tests.fakes.x import FakeX

PASSWORD = "app-pass-1234"
TEMP = ReplyConfig(id="temp", match=("warm", "temp"), text="Water is {{ water }} °C, {{ asker }}.")
POST = "app.bsky.feed.post"


def section(**kw: Any) -> ConversationsSection:
    return ConversationsSection.model_validate({"enabled": True, **kw})


class Gateway:
    """The conversation pieces of a gateway on the fake PDS's account, on real SQLite."""

    def __init__(self, pds: FakePds, tmp: Path, replies: tuple[ReplyConfig, ...] = (TEMP,)) -> None:
        config = BlueskyConfig.model_validate(
            {
                "id": "sky",
                "type": "bluesky",
                "handle": pds.handle,
                "app_password": PASSWORD,
                "service": pds.url,
                "timeout": 2,
            }
        )
        publisher = build_publisher(config, PublisherContext(tmp, "pool"))
        assert isinstance(publisher, BlueskyPublisher)
        self.publisher = publisher
        self.outbox = Outbox(tmp / "gateway.db")
        self.inbox = Inbox(tmp / "gateway.db")
        self.conv = Conversations(
            section(),
            replies,
            self.inbox,
            self.outbox,
            context=lambda now: {"water": 24.5},
            own_accounts={"sky": publisher.account_id()},
            capabilities={"sky": publisher.capabilities},
        )
        self.poller = MentionPoller(publisher, self.inbox, self.conv, 60)
        self.worker = DeliveryWorker(self.outbox, publisher)

    def round(self) -> int:
        added = self.poller.poll_once()
        for _ in range(5):
            self.worker.step()
        return added

    def close(self) -> None:
        self.outbox.close()
        self.inbox.close()
        self.publisher.close()


@pytest.fixture
def pds() -> Iterator[FakePds]:
    with FakePds("poolcam.test", PASSWORD) as fake:
        yield fake


def replies(pds: FakePds) -> list[dict[str, Any]]:
    """The records the gateway's account created."""
    return [
        r["value"] for uri, r in pds.records.items() if uri.startswith(f"at://{pds.did}/{POST}/")
    ]


def test_a_mention_is_answered_once_as_a_real_reply_with_a_did_facet(
    pds: FakePds, tmp_path: Path
) -> None:
    asked = pds.mention("zoe.test", "@poolcam.test how warm is it? 🏊", display_name="Zoë 🏊")
    gw = Gateway(pds, tmp_path)
    assert gw.round() == 1
    gw.round()  # nothing new; nothing answered twice
    gw.close()
    [reply] = replies(pds)
    ref = {"uri": asked["uri"], "cid": asked["cid"]}
    assert reply["reply"] == {"root": ref, "parent": ref}
    assert reply["text"] == "@zoe.test Water is 24.5 °C, Zoë 🏊."
    raw = reply["text"].encode()
    [facet] = [f for f in reply["facets"] if f["features"][0]["$type"].endswith("#mention")]
    assert facet["features"][0]["did"] == pds.handles["zoe.test"]
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    assert raw[start:end].decode() == "@zoe.test"
    assert (start, end) == (0, 9)
    assert pds.calls("resolveHandle") == []  # the asker's DID came with the mention
    lists = pds.calls("listNotifications")
    assert all(c.header("atproto-proxy") == APPVIEW_PROXY for c in lists)
    assert sorted(lists[0].query["reasons"]) == ["mention", "reply"]
    # updateSeen follows the stored cursor, never runs ahead of it
    assert pds.seen_at == [pds.notifications[-1]["indexedAt"]]


def test_a_long_answer_is_fitted_to_300_graphemes_and_stays_a_reply(
    pds: FakePds, tmp_path: Path
) -> None:
    asked = pds.mention("kim.test", "@poolcam.test warm?")
    long = ReplyConfig(id="long", match=("warm",), text="Water 🌊 is warm. " * 40)
    gw = Gateway(pds, tmp_path, (long,))  # an answer far over Bluesky's 300 graphemes
    gw.round()
    gw.close()
    out = replies(pds)
    assert out
    ref = {"uri": asked["uri"], "cid": asked["cid"]}
    for record in out:
        assert len(graphemes(record["text"])) <= 300
        assert record["reply"]["root"] == ref
    first = min(out, key=lambda r: r["createdAt"])
    assert first["reply"]["parent"] == ref
    assert first["text"].startswith("@kim.test ")
    assert first["facets"][0]["features"][0]["did"] == pds.handles["kim.test"]


def test_a_create_whose_answer_was_lost_is_not_posted_twice(pds: FakePds, tmp_path: Path) -> None:
    pds.mention("lee.test", "@poolcam.test warm?")
    gw = Gateway(pds, tmp_path)
    pds.fail_next(Fault("reset_after", path="createRecord"))  # created, answer lost
    gw.round()
    gw.round()
    gw.close()
    assert len(pds.calls("getRecord")) == 1  # the lost answer was looked up...
    assert len(replies(pds)) == 1  # ...and found: not created again
    assert len(pds.calls("createRecord")) == 1


def test_a_reply_in_a_thread_keeps_the_threads_root(pds: FakePds, tmp_path: Path) -> None:
    first = pds.mention("ann.test", "nice pool, no question")
    second = pds.mention("bob.test", "@poolcam.test is the water warm?", reply_to=first["uri"])
    gw = Gateway(pds, tmp_path)
    gw.round()
    gw.close()
    [reply] = replies(pds)
    assert reply["reply"]["root"] == {"uri": first["uri"], "cid": first["cid"]}
    assert reply["reply"]["parent"] == {"uri": second["uri"], "cid": second["cid"]}


def test_reads_page_back_with_the_cursor_to_what_was_stored(pds: FakePds, tmp_path: Path) -> None:
    pds.mention("early.test", "@poolcam.test warm?")
    gw = Gateway(pds, tmp_path)
    gw.round()
    for n in range(120):  # more than two pages of 50 since the stored cursor
        pds.mention(f"u{n}.test", "@poolcam.test warm?")
    assert gw.poller.poll_once() == 120
    gw.close()
    pages = [c for c in pds.calls("listNotifications")][1:]
    assert len(pages) == 3
    assert "cursor" not in pages[0].query
    assert pages[1].query["cursor"] == [pds.notifications[-50]["indexedAt"]]
    stored = Inbox(tmp_path / "gateway.db")
    assert stored.counts()["seen"] == 121
    assert stored.cursor("sky") == pds.notifications[-1]["indexedAt"]
    stored.close()


def test_a_429_leaves_the_cursor_and_the_read_waits_for_the_reset(
    pds: FakePds, tmp_path: Path
) -> None:
    pds.mention("one.test", "@poolcam.test warm?")
    gw = Gateway(pds, tmp_path)
    gw.round()
    cursor = gw.inbox.cursor("sky")
    pds.mention("two.test", "@poolcam.test warm?")
    reset = str(int(time.time()) + 30)
    pds.reply_next(
        429,
        {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
        {"ratelimit-limit": "3000", "ratelimit-remaining": "0", "ratelimit-reset": reset},
        path="listNotifications",
    )
    assert gw.round() == 0
    assert gw.inbox.cursor("sky") == cursor
    calls = len(pds.calls("listNotifications"))
    assert gw.round() == 0  # before the reset: not even asked
    assert len(pds.calls("listNotifications")) == calls
    gw.publisher.mentions_hold.release()  # the reset has passed
    assert gw.round() == 1
    gw.close()
    assert len(replies(pds)) == 2


def test_a_bot_labelled_author_is_not_answered(pds: FakePds, tmp_path: Path) -> None:
    pds.mention("otherbot.test", "@poolcam.test how warm?", bot=True)
    gw = Gateway(pds, tmp_path)
    assert gw.round() == 1
    [row] = gw.inbox.recent()
    gw.close()
    assert (row["outcome"], row["reason"]) == ("skipped", "bot")
    assert replies(pds) == []


def test_a_restart_neither_misses_nor_answers_twice(pds: FakePds, tmp_path: Path) -> None:
    pds.mention("a.test", "@poolcam.test warm?")
    gw = Gateway(pds, tmp_path)
    gw.round()
    gw.close()
    pds.mention("b.test", "@poolcam.test warm?")  # while the gateway is down
    again = Gateway(pds, tmp_path)
    again.round()
    again.round()
    again.close()
    parents = sorted(r["reply"]["parent"]["uri"] for r in replies(pds))
    assert parents == sorted(n["uri"] for n in pds.notifications)


# -- X -------------------------------------------------------------------------

X_KEYS = {
    "consumer_key": "ck-app-key-1234",
    "consumer_secret": "cs-app-secret-do-not-log",
    "access_token": "at-1234-user-token",
    "access_token_secret": "ats-user-secret-do-not-log",
}


class XGateway(Gateway):
    """The same pieces on the fake X account (``read_mentions = true``)."""

    def __init__(self, x: FakeX, tmp: Path, **options: object) -> None:
        settings = {"mentions_interval": "0s", **options}  # these tests read every round
        config = XConfig.model_validate(
            {"id": "x", "type": "x", "api_base": x.url, "timeout": 2, **X_KEYS, **settings}
        )
        publisher = build_publisher(config, PublisherContext(tmp, "pool"))
        self.publisher = publisher  # type: ignore[assignment]
        self.outbox = Outbox(tmp / "gateway.db")
        self.inbox = Inbox(tmp / "gateway.db")
        self.conv = Conversations(
            section(),
            (TEMP,),
            self.inbox,
            self.outbox,
            context=lambda now: {"water": 24.5},
            capabilities={"x": publisher.capabilities},
        )
        self.poller = MentionPoller(publisher, self.inbox, self.conv, 60)  # type: ignore[arg-type]
        self.worker = DeliveryWorker(self.outbox, publisher)


@pytest.fixture
def x() -> Iterator[FakeX]:
    with FakeX(X_KEYS) as fake:
        yield fake


def x_replies(x: FakeX) -> list[dict[str, Any]]:
    return [t for t in x.tweets.values() if not t.get("mention")]


def test_x_reads_no_mentions_unless_configured(x: FakeX, tmp_path: Path) -> None:
    config = XConfig.model_validate({"id": "x", "type": "x", "api_base": x.url, **X_KEYS})
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
    assert not hasattr(publisher, "read_mentions")  # the runtime starts no poller for it
    publisher.close()


def test_x_mention_is_answered_once_with_in_reply_to_tweet_id(x: FakeX, tmp_path: Path) -> None:
    asked = x.mention("ann", "@poolcam how warm is the pool?")
    gw = XGateway(x, tmp_path, read_mentions=True)
    assert gw.round() == 1
    gw.round()
    gw.close()
    [reply] = x_replies(x)
    assert reply["reply_to"] == asked
    assert reply["text"] == "@ann Water is 24.5 °C, Ann."
    first = x.calls("/mentions")[0]
    assert first.query["expansions"] == ["author_id,referenced_tweets.id"]
    assert "username" in first.query["user.fields"][0]
    assert "since_id" not in first.query
    assert x.calls("/mentions")[1].query["since_id"] == [asked]


def test_x_reads_mentions_no_more_often_than_its_tier_allows(x: FakeX, tmp_path: Path) -> None:
    # Basic access: 10 reads per 15 minutes; the default poll_interval (60 s) would be
    # 15, so the publisher skips rounds that come sooner than mentions_interval
    x.mention("ann", "@poolcam how warm is the pool?")
    gw = XGateway(x, tmp_path, read_mentions=True, mentions_interval="100s")
    assert gw.round() == 1
    x.mention("bob", "@poolcam and now?")
    assert gw.round() == 0  # too soon: no request at all
    gw.close()
    assert len(x.calls("/mentions")) == 1
    assert len(x_replies(x)) == 1


def test_x_pages_back_to_since_id(x: FakeX, tmp_path: Path) -> None:
    x.mention("first", "@poolcam warm?")
    gw = XGateway(x, tmp_path, read_mentions=True)
    gw.round()
    ids = [x.mention(f"u{n}", f"@poolcam warm? {n}") for n in range(230)]
    assert gw.poller.poll_once() == 230
    gw.close()
    reads = x.calls("/mentions")[1:]
    assert [r.query.get("pagination_token") for r in reads] == [None, [ids[-100]], [ids[-200]]]
    assert Inbox(tmp_path / "gateway.db").cursor("x") == ids[-1]


def test_x_429_leaves_the_cursor_until_x_rate_limit_reset(x: FakeX, tmp_path: Path) -> None:
    x.mention("one", "@poolcam warm?")
    gw = XGateway(x, tmp_path, read_mentions=True)
    gw.round()
    cursor = gw.inbox.cursor("x")
    x.mentions_window = 1  # the window is used up: the next read is a 429
    x.mention("two", "@poolcam warm?")
    assert gw.round() == 0
    assert gw.inbox.cursor("x") == cursor
    reads = len(x.calls("/mentions"))
    gw.round()  # before x-rate-limit-reset: not even asked
    assert len(x.calls("/mentions")) == reads
    x.mentions_window, x.mention_reads = 75, 0  # the window reset
    gw.publisher.mentions_hold.release()  # type: ignore[attr-defined]
    assert gw.round() == 1
    gw.close()
    assert len(x_replies(x)) == 2


def test_x_restart_neither_misses_nor_answers_twice(x: FakeX, tmp_path: Path) -> None:
    a = x.mention("a", "@poolcam warm?")
    gw = XGateway(x, tmp_path, read_mentions=True)
    gw.round()
    gw.close()
    b = x.mention("b", "@poolcam warm?")
    again = XGateway(x, tmp_path, read_mentions=True)
    again.round()
    again.round()
    again.close()
    assert sorted(r["reply_to"] for r in x_replies(x)) == sorted([a, b])


def test_the_pool_example_answers_on_bluesky_with_a_fresh_photo(
    broker: Broker, tmp_path: Path
) -> None:
    """The example as shipped (Bluesky enabled, the fake PDS as its service), a real
    daemon and broker, and a camera agent that sends a new frame when asked."""
    import io
    import os
    import signal

    from PIL import Image, ImageStat

    from tests.gwutil import publish, start_gateway, wait_until
    from tests.poolexample import camera_agent, pool_config

    name = f"sky{os.getpid()}"
    with FakePds("poolcam.example.com", PASSWORD) as sky:
        config = pool_config(
            tmp_path,
            broker,
            name,
            {
                # the fake PDS dates its posts an hour back
                "per_asker_hourly = 3": (
                    'per_asker_hourly = 3\npoll_interval = "1s"\nmax_age = "1d"'
                ),
                'type = "bluesky"\n': f'type = "bluesky"\nservice = "{sky.url}"\n',
                'app_password = "${BLUESKY_APP_PASSWORD}"\nenabled = false': (
                    'app_password = "${BLUESKY_APP_PASSWORD}"\nenabled = true'
                ),
            },
        )
        publish(broker, [(f"{name}/pool/temperature", "26.5")], retain=True)
        env = {**os.environ, "BLUESKY_APP_PASSWORD": PASSWORD}
        with camera_agent(broker, f"{name}/cam/pool"):
            gateway = start_gateway(config, env=env)
            try:
                asked = sky.mention("zoe.test", "@poolcam.example.com how warm is the water?")
                (reply,) = wait_until(lambda: [r for r in replies(sky) if "reply" in r], timeout=40)
                ref = {"uri": asked["uri"], "cid": asked["cid"]}
                assert reply["reply"] == {"root": ref, "parent": ref}
                assert reply["text"].startswith("@zoe.test The water is 26.5 °C")
                (image,) = reply["embed"]["images"]
                alt = "Underwater view of the pool just now; the water is 26.5 °C"
                assert image["alt"] == alt
                blob = sky.blobs[image["image"]["ref"]["$link"]][1]
                with Image.open(io.BytesIO(blob)) as im:
                    assert ImageStat.Stat(im.convert("RGB")).mean[2] > 150  # the fresh frame
            finally:
                gateway.send_signal(signal.SIGTERM)
                gateway.communicate(timeout=30)
                publish(broker, [(f"{name}/pool/temperature", b"")], retain=True)
