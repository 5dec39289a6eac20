"""BCP 47 language tags: accepted by check-config, passed to each service in its own form
(issue 16, item 10).

Mastodon's ``language`` takes an ISO 639 code or one of its Chinese variants (its
LanguagesHelper: ``ISO_639_1_REGIONAL`` is zh-CN, zh-HK, zh-TW, zh-YUE); Bluesky's
``langs`` takes BCP 47 tags as they are (lexicon ``app.bsky.feed.post``); X's create
post has no language field.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import Post, new_post_id
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, PublisherContext
from gateway.publishers.bluesky import BlueskyConfig
from gateway.publishers.mastodon import MastodonConfig
from gateway.publishers.x import XConfig
from tests.fakes.bluesky import FakePds
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.x import FakeX
from tests.gwutil import cli

CONFIG = """
[gateway]
name = "t"
state_dir = "{state}"

[[rules]]
id = "hourly"
every = "1h"
text = "Water"
publish_to = ["archive"]
language = "{tag}"

[[publishers]]
id = "archive"
type = "file"
"""

# tag → what Mastodon is sent, what Bluesky is sent
TAGS = [
    ("zh-Hant-TW", "zh-TW", "zh-Hant-TW"),
    ("zh-Hans", "zh-CN", "zh-Hans"),
    ("zh-HK", "zh-HK", "zh-HK"),
    ("sr-Latn", "sr", "sr-Latn"),
    ("es-419", "es", "es-419"),
    ("pt-br", "pt", "pt-BR"),  # written in any case, sent in the conventional one
    ("de-CH-1996", "de", "de-CH-1996"),
    ("en", "en", "en"),
]


@pytest.mark.parametrize("tag", [t for t, _, _ in TAGS])
def test_check_config_accepts_bcp47_tags(tmp_path: Path, tag: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(state=tmp_path, tag=tag), encoding="utf-8")
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("tag", ["english", "en_US", "zh-", "e", "zh-Hant-TW-"])
def test_check_config_refuses_what_is_no_tag(tmp_path: Path, tag: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(state=tmp_path, tag=tag), encoding="utf-8")
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 78
    assert "rules[0].language" in result.stdout + result.stderr


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon("mastodon-token") as fake:
        yield fake


@pytest.fixture
def pds() -> Iterator[FakePds]:
    with FakePds("poolcam.test", "app-pass-1234") as fake:
        yield fake


def post_in(tag: str) -> Post:
    from gateway.config.rules import language_tag

    return Post(new_post_id(), "r", datetime.now(UTC), f"Water ({tag})", (), language_tag(tag))


def test_each_service_gets_the_tag_in_its_form(
    mastodon: FakeMastodon, pds: FakePds, tmp_path: Path
) -> None:
    ctx = PublisherContext(state_dir=tmp_path, gateway_name="pool", store=MemoryStore())
    toot = build_publisher(
        MastodonConfig.model_validate(
            {
                "id": "m",
                "type": "mastodon",
                "base_url": mastodon.url,
                "access_token": "mastodon-token",
            }
        ),
        ctx,
    )
    sky = build_publisher(
        BlueskyConfig.model_validate(
            {
                "id": "b",
                "type": "bluesky",
                "handle": "poolcam.test",
                "app_password": "app-pass-1234",
                "service": pds.url,
            }
        ),
        ctx,
    )
    for tag, _, _ in TAGS:
        post = post_in(tag)
        toot.publish(post, post.text, (), f"k-{tag}")
        sky.publish(post, post.text, (), f"k-{tag}")
    toot.close()
    sky.close()
    sent = [r.json()["language"] for r in mastodon.calls("/api/v1/statuses")]
    assert sent == [m for _, m, _ in TAGS]
    langs = [r.json()["record"]["langs"] for r in pds.calls("createRecord")]
    assert langs == [[b] for _, _, b in TAGS]


def test_x_is_sent_no_language(tmp_path: Path) -> None:
    keys = {
        "consumer_key": "ck-app-key-1234",
        "consumer_secret": "cs-app-secret",
        "access_token": "at-1234-user-token",
        "access_token_secret": "ats-user-secret",
    }
    with FakeX(keys) as fake:
        config = XConfig.model_validate({"id": "x", "type": "x", "api_base": fake.url, **keys})
        ctx = PublisherContext(state_dir=tmp_path, gateway_name="pool", store=MemoryStore())
        x = build_publisher(config, ctx)
        x.publish(post_in("zh-Hant-TW"), "Water", (), "k")
        x.close()
        assert fake.calls("/2/tweets")[0].json() == {"text": "Water"}
