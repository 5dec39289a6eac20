"""The gateway with network publishers: starting never waits for a server, and
composition fits each post to the publisher's limits as they are *now*."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from gateway.runtime.app import Gateway
from gateway.runtime.loading import load_config
from tests.fakes.backends import MASTODON_TOKEN
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.server import Recorded, Reply
from tests.gwutil import base_config, wait_until


class GatedMastodon(FakeMastodon):
    """Holds ``/api/v2/instance`` answers until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.asked = threading.Event()
        super().__init__(MASTODON_TOKEN, max_characters=1000)

    def _instance(self, request: Recorded, match: re.Match[str]) -> Reply:
        self.asked.set()
        self.gate.wait(30)
        return super()._instance(request, match)


@pytest.fixture
def mastodon() -> Iterator[GatedMastodon]:
    with GatedMastodon() as fake:
        try:
            yield fake
        finally:
            fake.gate.set()


def test_start_does_not_wait_for_mastodon_and_limits_apply_once_known(
    broker: Broker, mastodon: GatedMastodon, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        base_config(broker, tmp_path / "state")
        + f"""
[[rules]]
id = "long"
every = "1h"
text = "{"word " * 140}end"
publish_to = ["masto"]

[[publishers]]
id = "masto"
type = "mastodon"
base_url = "{mastodon.url}"
access_token = "{MASTODON_TOKEN}"
""",
        encoding="utf-8",
    )
    gateway = Gateway(load_config(path))
    try:
        assert not mastodon.requests  # building asks the server nothing
        gateway.start()  # returns although the server holds its answer
        mastodon.asked.wait(10)
        # While the limits are being fetched, posts are fitted to the stored/default ones.
        assert gateway.runner.capabilities["masto"].max_text == 500
        held = gateway.fire("long")
        assert held is not None
        mastodon.gate.set()
        wait_until(lambda: gateway.runner.capabilities["masto"].max_text == 1000, timeout=10)
        post = gateway.fire("long")
        assert post is not None
        wait_until(lambda: len(mastodon.statuses) == 2, timeout=10)
    finally:
        gateway.stop()
    texts = sorted((s["content"] for s in mastodon.statuses.values()), key=len)
    assert texts[0].endswith("…</p>")  # fitted to 500 before the server answered
    assert len(texts[0]) < 510
    assert texts[1] == f"<p>{'word ' * 140}end</p>"  # 703 characters: fits the server's 1000


def test_the_static_site_links_each_post_to_where_it_was_sent(
    broker: Broker, tmp_path: Path
) -> None:
    """The archive is written before Mastodon answers; once it does, the post's static
    permalink and the index link the status (no server needed: it works from file://)."""
    from gateway.publishers.file import read_archive

    with FakeMastodon(MASTODON_TOKEN) as mastodon:
        path = tmp_path / "gateway.toml"
        path.write_text(
            base_config(broker, tmp_path / "state")
            + f"""
[[rules]]
id = "hello"
every = "1h"
text = "hello from the pool"
publish_to = ["archive", "masto"]

[[publishers]]
id = "archive"
type = "file"
path = "posts"
site = true

[[publishers]]
id = "masto"
type = "mastodon"
base_url = "{mastodon.url}"
access_token = "{MASTODON_TOKEN}"
""",
            encoding="utf-8",
        )
        gateway = Gateway(load_config(path))
        try:
            gateway.start()
            post = gateway.fire("hello")
            assert post is not None
            wait_until(lambda: len(mastodon.statuses) == 1, timeout=15)
            (status,) = mastodon.statuses.values()
            site = tmp_path / "state" / "posts"
            permalink = site / "posts" / f"{post.id}.html"
            wait_until(lambda: status["url"] in permalink.read_text(encoding="utf-8"), timeout=10)
        finally:
            gateway.stop()
        assert status["url"] in (site / "index.html").read_text(encoding="utf-8")
        assert [r["id"] for r in read_archive(site / "posts.jsonl")] == [post.id]
        # a restart keeps the links (site.json) and the archive stays as it was written
        gateway = Gateway(load_config(path))
        gateway.start()
        gateway.stop()
        assert status["url"] in (site / "index.html").read_text(encoding="utf-8")
        assert "links" not in read_archive(site / "posts.jsonl")[0]
