"""Conversations (issue 18): mentions read, stored, answered once, safely.

The Mastodon side runs against mastodon-mock (PyPI, an independent implementation
of Mastodon's API): bob mentions alice, the gateway (alice's token) answers, and the
test reads the answer back through the API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config.conversations import ConversationsSection, ReplyConfig
from gateway.config.publishers import MastodonConfig
from gateway.conversations.answering import Conversations
from gateway.conversations.inbox import Inbox
from gateway.conversations.poller import MentionPoller
from gateway.model import Mention
from gateway.outbox.delivery import DeliveryWorker
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import PublisherContext

pytest.importorskip("mastodon_mock.testing.server")
from mastodon_mock.testing.server import MockServer

TEMP = ReplyConfig(
    id="temp",
    match=("temp", "warm", "حرارة", "температура"),
    text="Water is {{ water }} °C, {{ asker }}. You asked: “{{ mention.quote }}”",
)
HELP = ReplyConfig(id="help", fallback=True, text="Ask me how warm the water is.")


def section(**kw: Any) -> ConversationsSection:
    return ConversationsSection.model_validate({"enabled": True, **kw})


def as_user(mock: MockServer, token: str, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(
        method, f"{mock.base_url}{path}", headers={"Authorization": f"Bearer {token}"}, **kw
    )
    response.raise_for_status()
    return response.json()


def ask(mock: MockServer, status: dict[str, str]) -> Any:
    """bob posts ``status`` (a mention of alice)."""
    return as_user(mock, "bob_token", "POST", "/api/v1/statuses", json=status)


class Gateway:
    """The conversation pieces of a gateway on alice's account, on real SQLite files."""

    def __init__(self, mock: MockServer, tmp: Path, conv: ConversationsSection) -> None:
        config = MastodonConfig.model_validate(
            {
                "id": "masto",
                "type": "mastodon",
                "base_url": mock.base_url,
                "access_token": "alice_token",
                "timeout": 5,
                "visibility": "public",
            }
        )
        self.publisher = build_publisher(config, PublisherContext(tmp, "pool"))
        self.outbox = Outbox(tmp / "gateway.db")
        self.inbox = Inbox(tmp / "gateway.db")
        self.conv = Conversations(
            conv,
            (TEMP, HELP),
            self.inbox,
            self.outbox,
            context=lambda now: {"water": 24.5},
            own_accounts={"masto": self.publisher.account_id()},  # type: ignore[attr-defined]
        )
        self.poller = MentionPoller(self.publisher, self.inbox, self.conv, 60)  # type: ignore[arg-type]
        self.worker = DeliveryWorker(self.outbox, self.publisher)

    def round(self) -> None:
        self.poller.poll_once()
        for _ in range(5):
            self.worker.step()

    def close(self) -> None:
        self.outbox.close()
        self.inbox.close()
        self.publisher.close()


@pytest.fixture
def mock() -> Any:
    with MockServer() as server:
        yield server


def test_a_mention_gets_one_real_reply_read_back_through_the_api(
    mock: MockServer, tmp_path: Path
) -> None:
    gw = Gateway(mock, tmp_path, section())
    asked = ask(mock, {"status": "@alice how warm is the pool?", "visibility": "public"})
    gw.round()
    gw.round()  # a second round reads nothing new and answers nothing twice
    gw.close()
    replies = [
        s
        for s in as_user(mock, "bob_token", "GET", f"/api/v1/statuses/{asked['id']}/context")[
            "descendants"
        ]
    ]
    assert len(replies) == 1
    reply = replies[0]
    assert reply["in_reply_to_id"] == asked["id"]
    assert reply["account"]["username"] == "alice"
    assert reply["visibility"] == "public"
    assert "24.5 °C" in reply["content"]
    assert "@bob" in reply["content"]


@pytest.mark.parametrize("visibility", ["direct", "private", "unlisted"])
def test_a_reply_never_widens_the_mentions_visibility(
    mock: MockServer, tmp_path: Path, visibility: str
) -> None:
    gw = Gateway(mock, tmp_path, section())
    asked = ask(mock, {"status": "@alice warm?", "visibility": visibility})
    gw.round()
    gw.close()
    (entry,) = Inbox(tmp_path / "gateway.db").recent(5)
    assert entry["outcome"] == "answered"
    status = as_user(mock, "alice_token", "GET", "/api/v1/accounts/verify_credentials")
    own = as_user(mock, "alice_token", "GET", f"/api/v1/accounts/{status['id']}/statuses")
    assert [(s["in_reply_to_id"], s["visibility"]) for s in own] == [(asked["id"], visibility)]


def test_template_syntax_mentions_and_links_in_the_question_are_echoed_inert(
    mock: MockServer, tmp_path: Path
) -> None:
    gw = Gateway(mock, tmp_path, section(quote_chars=200))
    as_user(
        mock,
        "bob_token",
        "POST",
        "/api/v1/statuses",
        json={"status": "@alice temp {{ 7*7 }} @everyone https://evil.example/x"},
    )
    gw.round()
    (post,) = [e for e in gw.outbox.history(5)]
    gw.close()
    text = post["text"]
    assert "49" not in text
    assert "{{ 7*7 }}" in text
    assert "@everyone" not in text  # handles are not echoed at all
    assert "https://evil.example" not in text  # the link is defused (word joiner)
    assert text.startswith("@bob ")


def mention(n: int, author: str = "eve@spam.example", **kw: Any) -> Mention:
    base: dict[str, Any] = {
        "publisher": "masto",
        "remote_id": str(1000 + n),
        "author": author,
        "author_id": f"id-{author}",
        "text": "@alice how warm?",
        "created_at": datetime.now(UTC),
    }
    base.update(kw)
    return Mention(**base)


def offline_gateway(tmp: Path, conv: ConversationsSection) -> tuple[Inbox, Outbox, Conversations]:
    inbox = Inbox(tmp / "gateway.db")
    outbox = Outbox(tmp / "gateway.db")
    convs = Conversations(
        conv,
        (TEMP, HELP),
        inbox,
        outbox,
        context=lambda now: {"water": 20},
        own_accounts={"masto": "id-alice"},
    )
    return inbox, outbox, convs


def reasons(inbox: Inbox) -> list[str]:
    return [e["reason"] or e["outcome"] for e in inbox.recent(2000)]


def test_a_thousand_mentions_from_one_account_get_at_most_the_per_asker_cap(
    tmp_path: Path,
) -> None:
    inbox, outbox, convs = offline_gateway(
        tmp_path, section(per_asker_hourly=3, cooldown="0s", global_hourly=1000)
    )
    inbox.store([mention(n) for n in range(1000)], "masto", "1999")
    convs.answer_pending()
    while inbox.undecided():
        convs.answer_pending()
    got = reasons(inbox)
    assert got.count("answered") == 3
    assert got.count("asker cap") == 997
    assert outbox.counts() == {"pending": 3}


def test_cooldown_and_global_cap(tmp_path: Path) -> None:
    inbox, _, convs = offline_gateway(
        tmp_path, section(per_asker_hourly=10, cooldown="10m", global_hourly=2)
    )
    inbox.store(
        [mention(0), mention(1), mention(2, author="ann"), mention(3, author="cy")], "masto", "3"
    )
    convs.answer_pending()
    assert sorted(reasons(inbox)) == ["answered", "answered", "cooldown", "global cap"]


def test_after_a_day_offline_old_mentions_get_no_answer(tmp_path: Path) -> None:
    inbox, outbox, convs = offline_gateway(tmp_path, section())
    day_ago = datetime.now(UTC) - timedelta(days=1)
    inbox.store([mention(n, author=f"u{n}", created_at=day_ago) for n in range(5)], "masto", "9")
    convs.answer_pending()
    assert reasons(inbox) == ["too old"] * 5
    assert outbox.counts() == {}


def test_bots_self_and_deny_lists(tmp_path: Path) -> None:
    inbox, _, convs = offline_gateway(
        tmp_path, section(deny_domains=("spam.example",), deny_accounts=("@troll",))
    )
    inbox.store(
        [
            mention(0, author="robot@bots.example", bot=True),
            mention(1, author="alice", author_id="id-alice"),
            mention(2),
            mention(3, author="troll"),
            mention(4, author="ann", text="@alice hello there"),
        ],
        "masto",
        "4",
    )
    convs.answer_pending()
    by_author = {e["author"]: e["reason"] or e["outcome"] for e in inbox.recent(10)}
    assert by_author == {
        "robot@bots.example": "bot",
        "alice": "self",
        "eve@spam.example": "denied",
        "troll": "denied",
        "ann": "answered",  # the fallback reply
    }


def test_a_question_in_any_script_matches(tmp_path: Path) -> None:
    _, _, convs = offline_gateway(tmp_path, section())
    assert convs.match("@alice كم درجة الحرارة؟").id == "temp"  # type: ignore[union-attr]
    assert convs.match("@alice какая температура?").id == "temp"  # type: ignore[union-attr]
    assert convs.match("@alice hello").id == "help"  # type: ignore[union-attr]


def test_two_gateways_that_mention_each_other_stop_after_the_first_exchange(
    mock: MockServer, tmp_path: Path
) -> None:
    """alice and bob both run gateways, and bob's account is a bot (as a thing's is)."""
    as_user(mock, "bob_token", "PATCH", "/api/v1/accounts/update_credentials", data={"bot": "true"})
    as_user(
        mock, "alice_token", "PATCH", "/api/v1/accounts/update_credentials", data={"bot": "true"}
    )
    alice = Gateway(mock, tmp_path / "a", section())
    as_user(mock, "bob_token", "POST", "/api/v1/statuses", json={"status": "@alice warm?"})
    for _ in range(3):
        alice.round()
    alice.close()
    assert reasons(Inbox(tmp_path / "a" / "gateway.db")) == ["bot"]


def test_cli_mentions_lists_what_became_of_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nname = "pool"\nstate_dir = "{tmp_path / "var"}"\n')
    from gateway.config import load_config
    from gateway.runtime.paths import database_path

    inbox, _, convs = offline_gateway(database_path(load_config(config)).parent, section())
    inbox.store(
        [mention(0, author="ann"), mention(1, author="bot@x.example", bot=True)], "masto", "1"
    )
    convs.answer_pending()
    assert main(["mentions", "--json", "--limit", "5", "-c", str(config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["author"], r["outcome"], r["reason"]) for r in rows} == {
        ("ann", "answered", None),
        ("bot@x.example", "skipped", "bot"),
    }
    assert main(["mentions", "-c", str(config)]) == 0
    assert "bot@x.example" in capsys.readouterr().out


def test_bad_replies_are_refused_with_their_paths(tmp_path: Path) -> None:
    from gateway.config import ConfigError
    from gateway.runtime.loading import load_config

    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[publishers]]\nid = "console"\ntype = "console"\n'
        '[[rules]]\nid = "r"\nevery = "1h"\ntext = "x"\n'
        '[[replies]]\nid = "a"\nmatch = ["x"]\ntext = "{{ oops"\npublish_to = ["nowhere"]\n'
        '[[replies]]\nid = "b"\ntext = "y"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "replies[0].text: template error" in message
    assert "replies[0].publish_to[0]: unknown publisher 'nowhere'" in message
    assert "replies[1]: needs `match`" in message
