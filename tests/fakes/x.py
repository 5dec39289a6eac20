"""A fake X API v2: media upload, media metadata, tweets; OAuth 1.0a checked by oauthlib.

Every request's signature is verified server-side by oauthlib's
``SignatureOnlyEndpoint`` (the server half of the library, against the URL the
request reached, rebuilt from its Host header), with nonce replay detection.
Shapes follow docs.x.com: upload → ``{"data": {"id", "media_key", ...}}``; create
post → 201 ``{"data": {"id", "text"}}``; the same text twice → 403 "You are not
allowed to create a Tweet with duplicate content."; a reply to an unknown post → 400;
a bad signature → 401.
"""

from __future__ import annotations

import io
import re
import string
from typing import Any

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint  # type: ignore[import-untyped]
from PIL import Image

from tests.fakes.server import FakeServer, Recorded, Reply, Route

UNAUTHORIZED = Reply(
    401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
)
DUPLICATE = Reply(
    403,
    {
        "detail": "You are not allowed to create a Tweet with duplicate content.",
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
    },
)


class _Validator(RequestValidator):  # type: ignore[misc]
    """Knows one app and one user; rejects replayed nonces."""

    enforce_ssl = False
    client_key_length = (3, 100)
    access_token_length = (3, 100)
    nonce_length = (8, 64)
    dummy_client = "dummy-client"
    dummy_access_token = "dummy-token"

    def __init__(self, keys: dict[str, str]) -> None:
        super().__init__()
        self.keys = keys
        self.nonces: set[tuple[str, str, str]] = set()

    @property
    def safe_characters(self) -> set[str]:
        return set(string.ascii_letters + string.digits + "-_")

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key == self.keys["consumer_key"]

    def get_client_secret(self, client_key: str, request: Any) -> str:
        known = self.validate_client_key(client_key, request)
        return self.keys["consumer_secret"] if known else "not-the-secret"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        if token == self.keys["access_token"]:
            return self.keys["access_token_secret"]
        return "not-the-secret"

    def validate_timestamp_and_nonce(
        self, client_key: str, timestamp: str, nonce: str, request: Any, **kwargs: Any
    ) -> bool:
        seen = (client_key, timestamp, nonce)
        if seen in self.nonces:
            return False
        self.nonces.add(seen)
        return True


class FakeX(FakeServer):
    """The three X API v2 endpoints a post with images needs."""

    service = "x"

    def __init__(self, keys: dict[str, str]) -> None:
        self._endpoint = SignatureOnlyEndpoint(_Validator(keys))
        self.media: dict[str, dict[str, Any]] = {}
        self.tweets: dict[str, dict[str, Any]] = {}
        self.signature_failures = 0
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [
            ("POST", r"/2/media/upload", self._signed(self._upload)),
            ("POST", r"/2/media/metadata", self._signed(self._metadata)),
            ("POST", r"/2/tweets", self._signed(self._tweet)),
        ]

    def _signed(self, route: Route) -> Route:
        def check(request: Recorded, match: re.Match[str]) -> Reply:
            query = "&".join(f"{k}={v}" for k, vs in request.query.items() for v in vs)
            uri = f"http://{request.header('host')}{request.path}" + (f"?{query}" if query else "")
            valid, _ = self._endpoint.validate_request(
                uri, request.method, request.body, request.headers
            )
            if not valid:
                self.signature_failures += 1
                return UNAUTHORIZED
            return route(request, match)

        return check

    def _upload(self, request: Recorded, match: re.Match[str]) -> Reply:
        parts = {p.name: p for p in request.parts}
        if "media" not in parts or parts.get("media_category") is None:
            return Reply(
                400,
                {
                    "errors": [{"message": "media and media_category are required"}],
                    "title": "Invalid Request",
                },
            )
        with Image.open(io.BytesIO(parts["media"].data)) as image:
            width, height, kind = image.width, image.height, image.get_format_mimetype()
        media_id = str(1880028106020515840 + len(self.media))
        self.media[media_id] = {"category": parts["media_category"].text, "alt": None}
        return Reply(
            200,
            {
                "data": {
                    "id": media_id,
                    "media_key": f"3_{media_id}",
                    "size": len(parts["media"].data),
                    "expires_after_secs": 86400,
                    "image": {"image_type": kind, "w": width, "h": height},
                }
            },
        )

    def _metadata(self, request: Recorded, match: re.Match[str]) -> Reply:
        body = request.json()
        if body.get("id") not in self.media:
            return Reply(400, {"title": "Invalid Request", "detail": "unknown media id"})
        alt = body["metadata"]["alt_text"]["text"]
        self.media[body["id"]]["alt"] = alt
        return Reply(
            200, {"data": {"id": body["id"], "associated_metadata": {"alt_text": {"text": alt}}}}
        )

    def _tweet(self, request: Recorded, match: re.Match[str]) -> Reply:
        body = request.json()
        if any(t["text"] == body["text"] for t in self.tweets.values()):
            return DUPLICATE
        media_ids = body.get("media", {}).get("media_ids", [])
        if any(m not in self.media for m in media_ids):
            return Reply(400, {"title": "Invalid Request", "detail": "unknown media id"})
        reply_to = body.get("reply", {}).get("in_reply_to_tweet_id")
        if reply_to is not None and reply_to not in self.tweets:
            return Reply(400, {"title": "Invalid Request", "detail": "unknown reply target"})
        tweet_id = str(1445880548472328192 + len(self.tweets))
        self.tweets[tweet_id] = {"text": body["text"], "media_ids": media_ids, "reply_to": reply_to}
        return Reply(
            201,
            {"data": {"id": tweet_id, "text": body["text"], "edit_history_tweet_ids": [tweet_id]}},
        )
