"""One table of the HTTP backends and their fakes, shared by the cross-backend tests.

Each :class:`Backend` knows how to start its fake service, the publisher config
that points at it, which request creates the post, and how to read back what the
fake *created* (not merely received), so tests can count posts per post id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes.bluesky import FakePds
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.server import FakeServer
from tests.fakes.webhook import FakeWebhook

X_KEYS = {
    "consumer_key": "ck-app-key-1234",
    "consumer_secret": "cs-app-secret-do-not-log",
    "access_token": "at-1234-user-token",
    "access_token_secret": "ats-user-secret-do-not-log",
}
MASTODON_TOKEN = "mastodon-token-do-not-log"
BLUESKY_PASSWORD = "app-pass-do-not-log"
WEBHOOK_TOKEN = "hook-token-do-not-log"


@dataclass(frozen=True)
class Backend:
    """An HTTP backend under test: its fake, its config, and what counts as created."""

    type: str
    make_fake: Callable[[], FakeServer]
    config: Callable[[Any], dict[str, Any]]
    """The ``[[publishers]]`` entry (without ``id``) pointing at a running fake."""
    create_path: str
    """Part of the path of the request that creates the post."""
    created_texts: Callable[[Any], list[str]]
    """The text of every post the fake created, one entry per created object."""
    rate_limit_headers: Callable[[float], dict[str, str]]
    """Headers of a 429 that ask to wait 30 s, in the service's own style."""
    idempotent: bool = True
    """False when a retry after a lost answer can create a second post."""
    dead_on_401: bool = True
    """False when the publisher cannot tell an auth failure from any other."""
    sees_rate_limits: bool = True
    """False when the publisher cannot see the service's Retry-After."""


def _x_fake() -> FakeServer:
    from tests.fakes.x import FakeX

    return FakeX(X_KEYS)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


WEBHOOK = Backend(
    type="webhook",
    make_fake=FakeWebhook,
    config=lambda f: {"type": "webhook", "url": f"{f.url}/hooks/{WEBHOOK_TOKEN}"},
    create_path="/hooks/",
    created_texts=lambda f: [request.json()["text"] for request, _ in f.created],
    rate_limit_headers=lambda now: {"Retry-After": "30"},
)
MASTODON = Backend(
    type="mastodon",
    make_fake=lambda: FakeMastodon(MASTODON_TOKEN),
    config=lambda f: {"type": "mastodon", "base_url": f.url, "access_token": MASTODON_TOKEN},
    create_path="/api/v1/statuses",
    created_texts=lambda f: [s["content"] for s in f.statuses.values()],
    rate_limit_headers=lambda now: {
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": _iso(now + 30),
    },
)
BLUESKY = Backend(
    type="bluesky",
    make_fake=lambda: FakePds("poolcam.test", BLUESKY_PASSWORD),
    config=lambda f: {
        "type": "bluesky",
        "handle": "poolcam.test",
        "app_password": BLUESKY_PASSWORD,
        "service": f.url,
    },
    create_path="repo.createRecord",
    created_texts=lambda f: [r["value"]["text"] for r in f.records.values()],
    rate_limit_headers=lambda now: {
        "ratelimit-remaining": "0",
        "ratelimit-reset": str(int(now + 30)),
    },
)
X = Backend(
    type="x",
    make_fake=_x_fake,
    config=lambda f: {"type": "x", "api_base": f.url, **X_KEYS},
    create_path="/2/tweets",
    created_texts=lambda f: [t["text"] for t in f.tweets.values()],
    rate_limit_headers=lambda now: {
        "x-rate-limit-remaining": "0",
        "x-rate-limit-reset": str(int(now + 30)),
    },
)
APPRISE = Backend(
    type="apprise",
    make_fake=FakeWebhook,
    config=lambda f: {
        "type": "apprise",
        "urls": [f"json://{f.url.removeprefix('http://')}/hooks/{WEBHOOK_TOKEN}"],
    },
    create_path="/hooks/",
    created_texts=lambda f: [request.json()["message"] for request, _ in f.created],
    rate_limit_headers=lambda now: {"Retry-After": "30"},
    idempotent=False,
    dead_on_401=False,
    sees_rate_limits=False,
)

HTTP_BACKENDS = (WEBHOOK, MASTODON, BLUESKY, X, APPRISE)
SECRETS = (MASTODON_TOKEN, BLUESKY_PASSWORD, WEBHOOK_TOKEN, *X_KEYS.values())
