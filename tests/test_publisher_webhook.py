"""The webhook publisher and the shared HTTP layer, against a local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from gateway import __version__
from gateway.model import PermanentError, Post, RetryableError, new_post_id
from gateway.publishers import PUBLISHER_TYPES, Publisher, build_publisher
from gateway.publishers.base import PublisherContext
from gateway.publishers.http import retry_after
from gateway.publishers.webhook import WebhookConfig, WebhookPublisher
from tests.fakes import Fault
from tests.fakes.media import jpeg
from tests.fakes.webhook import FakeWebhook

SECRET = "hmac-secret-do-not-log"
TOKEN = "Bearer hook-token-do-not-log"


@pytest.fixture
def server() -> Iterator[FakeWebhook]:
    with FakeWebhook() as fake:
        yield fake


def build(server: FakeWebhook, tmp_path: Path, **options: object) -> WebhookPublisher:
    config = WebhookConfig.model_validate(
        {
            "id": "hook",
            "type": "webhook",
            "url": f"{server.url}/hooks/abc?token=url-secret",
            "secret": SECRET,
            "headers": {"Authorization": TOKEN},
            "timeout": 2,
            **options,
        }
    )
    return build_publisher(config, PublisherContext(state_dir=tmp_path, gateway_name="poolcam"))


def a_post(tmp_path: Path, n_images: int = 2) -> Post:
    media = tuple(
        jpeg(tmp_path, f"frame{n}.jpg", (64 + n, 48), f"Pool, camera {n} — ąę")
        for n in range(n_images)
    )
    return Post(
        new_post_id(), "hourly", datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "Woda 24 °C", media, "pl"
    )


def expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_json_post_sends_payload_headers_and_a_valid_signature(
    server: FakeWebhook, tmp_path: Path
) -> None:
    publisher = build(server, tmp_path)
    post = a_post(tmp_path)
    receipt = publisher.publish(post, "Woda 24 °C #pool", post.media, "key-1")
    publisher.close()

    (sent,) = server.calls("/hooks/")
    assert sent.path == "/hooks/abc"  # the configured URL, no slash added
    assert sent.query == {"token": ["url-secret"]}
    assert sent.header("content-type") == "application/json"
    assert sent.header("idempotency-key") == "key-1"
    assert sent.header("authorization") == TOKEN
    assert sent.header("user-agent") == f"things-gateway/{__version__}"
    assert sent.header("x-signature-256") == expected_signature(sent.body)
    payload = sent.json()
    assert payload["id"] == post.id
    assert payload["text"] == "Woda 24 °C #pool"
    assert payload["lang"] == "pl"
    assert payload["gateway"] == "poolcam"
    assert payload["idempotency_key"] == "key-1"
    assert payload["created_at"] == "2026-07-01T12:00:00+00:00"
    assert [m["alt"] for m in payload["media"]] == [m.alt for m in post.media]
    assert [m["width"] for m in payload["media"]] == [64, 65]
    assert receipt.remote_id == "evt-1"
    assert receipt.url == f"{server.url}/events/1"


def test_multipart_post_carries_the_image_bytes(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path, format="multipart", signature_header="X-Hub-Signature-256")
    post = a_post(tmp_path)
    publisher.publish(post, "with images", post.media, "key-2")
    publisher.close()

    (sent,) = server.calls("/hooks/")
    assert (sent.header("content-type") or "").startswith("multipart/form-data; boundary=")
    assert sent.header("x-hub-signature-256") == expected_signature(sent.body)
    payload_part, *files = sent.parts
    assert payload_part.name == "payload"
    assert payload_part.content_type == "application/json"
    payload = json.loads(payload_part.data)
    assert [f.name for f in files] == ["media", "media"]
    for entry, part, item in zip(payload["media"], files, post.media, strict=True):
        assert part.filename == entry["filename"]
        assert part.content_type == "image/jpeg"
        assert part.data == item.path.read_bytes()
        assert part.data[:3] == b"\xff\xd8\xff"
        assert entry["alt"] == item.alt


def test_no_secret_means_no_signature_header(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path, secret=None)
    publisher.publish(a_post(tmp_path, 0), "plain", (), "key-3")
    publisher.close()
    assert server.calls("/hooks/")[0].header("x-signature-256") is None


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (500, {"error": "boom"}, RetryableError, "HTTP 500"),
        (503, "down for maintenance", RetryableError, "down for maintenance"),
        (
            401,
            {"error": "invalid_token", "error_description": "token revoked"},
            PermanentError,
            "token revoked",
        ),
        (400, {"message": "text is required"}, PermanentError, "text is required"),
        (422, {"detail": "unsupported payload"}, PermanentError, "unsupported payload"),
    ],
)
def test_error_statuses_map_to_retry_or_permanent(
    server: FakeWebhook, tmp_path: Path, status: int, body: object, error: type, text: str
) -> None:
    publisher = build(server, tmp_path)
    server.reply_next(status, body.encode() if isinstance(body, str) else body)
    with pytest.raises(error) as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert text in str(caught.value)
    assert caught.type is error or issubclass(caught.type, error)
    for secret in (SECRET, TOKEN, "url-secret"):
        assert secret not in str(caught.value)


def test_429_uses_retry_after(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    server.reply_next(429, {"error": "slow down"}, {"Retry-After": "7"})
    with pytest.raises(RetryableError) as caught:
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert caught.value.retry_after == 7


def test_connection_reset_and_timeout_are_retryable(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path, timeout=0.3)
    server.fail_next(Fault("reset"))
    with pytest.raises(RetryableError, match="connection failed"):
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    server.fail_next(Fault("slow", delay=2))
    with pytest.raises(RetryableError, match="timed out"):
        publisher.publish(a_post(tmp_path, 0), "x", (), "k")
    publisher.close()
    assert len(server.calls("/hooks/")) == 2


def test_secrets_stay_out_of_reprs(server: FakeWebhook, tmp_path: Path) -> None:
    publisher = build(server, tmp_path)
    config = publisher._config
    for text in (repr(config), str(config), config.model_dump_json(), repr(publisher)):
        for secret in (SECRET, TOKEN, "url-secret"):
            assert secret not in text
    assert isinstance(publisher, Publisher)
    publisher.close()


def test_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookConfig.model_validate({"id": "h", "type": "webhook", "url": "ftp://example/x"})


def test_registry_lists_every_type_and_imports_no_http_library() -> None:
    assert set(PUBLISHER_TYPES) >= {"webhook", "mastodon", "bluesky", "x"}
    code = (
        "import sys, gateway.publishers;"
        "print(sorted(m for m in ('httpx', 'oauthlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "120"}, 120),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)}, 90),
        # Mastodon: ISO-8601 instant
        ({"X-RateLimit-Reset": datetime.fromtimestamp(NOW + 300, UTC).isoformat()}, 300),
        ({"X-RateLimit-Reset": "2026-05-28T20:31:40.000Z"}, None),  # checked below
        # Bluesky: epoch seconds
        ({"ratelimit-reset": str(int(NOW + 45)), "ratelimit-remaining": "0"}, 45),
        # X: epoch seconds
        ({"x-rate-limit-reset": str(int(NOW + 600))}, 600),
        ({"x-rate-limit-reset": str(int(NOW - 5))}, 0),
        ({}, None),
        ({"Retry-After": "soon"}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    if "2026-05-28" in headers.get("X-RateLimit-Reset", ""):
        at = datetime(2026, 5, 28, 20, 31, 40, tzinfo=UTC).timestamp()
        assert retry_after(headers, now=at - 12.5) == 12.5
        return
    assert retry_after(headers, now=NOW) == seconds
