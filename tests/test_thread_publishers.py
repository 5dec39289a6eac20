"""Threads through the one-message publishers (console, file, webhook, mqtt, apprise),
the one-by-one default for publishers without ``publish_thread``, and the whole
gateway: a rule with ``overflow = "thread"`` posting to the archive and Mastodon."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.broker import Broker
from gateway.model import MediaItem, Post, Receipt, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.base import BrokerSettings, Capabilities, PublisherContext
from gateway.publishers.bluesky import record_key
from gateway.publishers.console import ConsoleConfig, ConsolePublisher
from gateway.publishers.file import FileConfig, read_archive
from gateway.publishers.mqtt import MqttConfig
from gateway.publishers.threads import publish_thread
from gateway.publishers.webhook import WebhookConfig
from gateway.runtime.app import Gateway
from gateway.runtime.loading import load_config
from tests.fakes.backends import MASTODON_TOKEN
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.media import jpeg
from tests.fakes.webhook import FakeWebhook
from tests.gwutil import archive_posts, base_config, wait_until

PARTS = ("The pool report, 1/3", "Water is warm, 2/3", "Come swimming, 3/3")


def a_post(tmp_path: Path, n_images: int = 1) -> Post:
    media = tuple(jpeg(tmp_path, f"t{n}.jpg", (64, 48), f"View {n}") for n in range(n_images))
    return Post(new_post_id(), "report", datetime.now(UTC), "long", media, "en")


def test_console_prints_every_part(tmp_path: Path) -> None:
    stream = io.StringIO()
    publisher = ConsolePublisher(ConsoleConfig(id="out", type="console"), stream)
    post = a_post(tmp_path)
    receipt = publish_thread(publisher, post, PARTS, post.media, "key")
    out = stream.getvalue()
    assert "\n\n".join(PARTS) in out
    assert out.count("[image 64x48]") == 1
    assert receipt == Receipt(post.id)


def test_file_archive_keeps_the_whole_thread_once(tmp_path: Path) -> None:
    config = FileConfig(id="archive", type="file")
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
    post, single = a_post(tmp_path), a_post(tmp_path, 0)
    publish_thread(publisher, post, PARTS, post.media, "key")
    publish_thread(publisher, post, PARTS, post.media, "key")  # a retry: no second line
    publisher.publish(single, "short", (), "key-2")
    threaded, plain = read_archive(tmp_path / "posts" / "posts.jsonl")
    assert threaded["id"] == post.id
    assert threaded["text"] == PARTS[0]  # the archive contract: text is what was posted first
    assert threaded["thread"] == list(PARTS)
    assert len(threaded["media"]) == 1
    assert plain["text"] == "short"
    assert "thread" not in plain


def test_webhook_sends_one_request_with_the_thread(tmp_path: Path) -> None:
    with FakeWebhook() as server:
        config = WebhookConfig.model_validate(
            {"id": "hook", "type": "webhook", "url": f"{server.url}/hooks/t"}
        )
        publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
        post = a_post(tmp_path)
        receipt = publish_thread(publisher, post, PARTS, post.media, "key")
        publisher.close()
        ((sent, event),) = server.created
    body = sent.json()
    assert body["text"] == PARTS[0]
    assert body["thread"] == list(PARTS)
    assert len(body["media"]) == 1
    assert receipt.remote_id == event["id"]


def test_mqtt_message_carries_the_thread(
    broker: Broker, mqtt_topic: str, mqtt_subscribe: Any, tmp_path: Path
) -> None:
    sub = mqtt_subscribe(f"{mqtt_topic}/#")
    config = MqttConfig.model_validate(
        {"id": "bus", "type": "mqtt", "timeout": 3, "topic": mqtt_topic + "/{rule}"}
    )
    settings = BrokerSettings(host=broker.host, port=broker.port, protocol=311)
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool", broker=settings))
    post = a_post(tmp_path, 0)
    publish_thread(publisher, post, PARTS, (), "key")
    publisher.close()
    (msg,) = sub.wait_for(lambda m: len(m) >= 1)
    body = json.loads(msg.payload)
    assert body["text"] == PARTS[0]
    assert body["thread"] == list(PARTS)


def test_apprise_joins_the_parts(tmp_path: Path) -> None:
    pytest.importorskip("apprise")
    from gateway.publishers.apprise import AppriseConfig

    with FakeWebhook() as server:
        host = server.url.removeprefix("http://")
        config = AppriseConfig.model_validate(
            {"id": "notify", "type": "apprise", "urls": [f"json://{host}/hooks/tok"]}
        )
        publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
        post = a_post(tmp_path, 0)
        publish_thread(publisher, post, PARTS, (), "key")
        publisher.close()
        ((sent, _),) = server.created
    assert sent.json()["message"] == "\n\n".join(PARTS)


class OnePostAtATime:
    """A third-party style publisher with only ``publish``: records every call."""

    id = "plain"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        self.calls.append((text, len(media), idempotency_key))
        return Receipt(remote_id=f"r{len(self.calls)}")

    def close(self) -> None:
        pass


def test_publishers_without_publish_thread_get_each_part_in_turn(tmp_path: Path) -> None:
    publisher = OnePostAtATime()
    post = a_post(tmp_path, 2)
    receipt = publish_thread(publisher, post, PARTS, post.media, "key")
    assert publisher.calls == [(PARTS[0], 2, "key"), (PARTS[1], 0, "key-2"), (PARTS[2], 0, "key-3")]
    assert receipt == Receipt("r1")


def test_record_keys_of_thread_parts_are_stable_and_ordered() -> None:
    post_id = new_post_id()
    keys = [record_key(post_id, n) for n in (1, 2, 3)]
    assert keys[0] == record_key(post_id)  # part 1 keeps a single post's key
    assert keys == sorted(set(keys))
    assert keys == [record_key(post_id, n) for n in (1, 2, 3)]


# -- the whole gateway -------------------------------------------------------------


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon(MASTODON_TOKEN, max_characters=120) as fake:
        yield fake


def test_gateway_threads_a_long_post_to_mastodon_and_archives_it(
    broker: Broker, mastodon: FakeMastodon, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    path = tmp_path / "gateway.toml"
    path.write_text(
        base_config(broker, state)
        + f"""
[[rules]]
id = "report"
every = "1h"
overflow = "thread"
text = "{{{{ 'The pool is open and the water is warm today. ' * 6 }}}}#pool"
publish_to = ["archive", "masto"]

[[publishers]]
id = "archive"
type = "file"

[[publishers]]
id = "masto"
type = "mastodon"
base_url = "{mastodon.url}"
access_token = "{MASTODON_TOKEN}"
visibility = "public"
""",
        encoding="utf-8",
    )
    gateway = Gateway(load_config(path))
    try:
        gateway.start()
        wait_until(lambda: gateway.runner.capabilities["masto"].max_text == 120, timeout=10)
        post = gateway.fire("report")
        assert post is not None
        history = wait_until(
            lambda: [
                e
                for e in gateway.outbox.history(5)
                if all(d["status"] == "sent" for d in e["deliveries"].values())
            ],
            timeout=15,
        )
    finally:
        gateway.stop()

    statuses = list(mastodon.statuses.values())
    assert len(statuses) >= 3
    assert statuses[0]["in_reply_to_id"] is None
    for earlier, later in itertools.pairwise(statuses):
        assert later["in_reply_to_id"] == earlier["id"]
        assert later["visibility"] == "public"
    texts = [s["content"].removeprefix("<p>").removesuffix("</p>") for s in statuses]
    assert all(len(t) <= 120 for t in texts)
    assert texts[0].endswith(f"1/{len(texts)}")  # numbered parts
    assert "#pool" in texts[-1]

    (entry,) = history
    assert entry["deliveries"]["masto"]["remote_id"] == statuses[0]["id"]
    (archived,) = archive_posts(state)
    # The archive has no length limit: the whole text fits in one post, so no thread.
    assert archived["text"].startswith("The pool is open")
    assert archived["text"].endswith("#pool")
    assert "thread" not in archived
