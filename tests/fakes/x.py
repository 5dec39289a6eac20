"""A fake X API v2: media upload, media metadata, tweets; OAuth 1.0a checked by oauthlib.

Every request's signature is verified server-side by oauthlib's
``SignatureOnlyEndpoint`` (the server half of the library, against the URL the
request reached, rebuilt from its Host header), with nonce replay detection.
Shapes follow docs.x.com: upload → ``{"data": {"id", "media_key", ...}}``; create
post → 201 ``{"data": {"id", "text"}}``; the same text twice → 403 "You are not
allowed to create a Tweet with duplicate content."; a reply to an unknown post → 400;
a bad signature → 401.  Each post answer carries the 15-minute window headers
(``x-rate-limit-*``) and, with ``user_cap``/``app_cap`` set, the 24-hour cap headers
(``x-user-limit-24hour-*``, ``x-app-limit-24hour-*``), counting down; a used-up cap
answers 429 with them.  The chunked upload (``command=INIT/APPEND/FINALIZE``, ``GET
?command=STATUS``) answers with ``processing_info`` as docs.x.com shows; an MP4 is
decoded with PyAV at FINALIZE (frames, codec, size), and ``fail_processing`` makes
STATUS end in ``failed``.
"""

from __future__ import annotations

import io
import re
import string
import time
from typing import Any

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint  # type: ignore[import-untyped]
from PIL import Image

from tests.fakes.media import video_facts
from tests.fakes.server import FakeServer, Part, Recorded, Reply, Route

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
        self.user_cap: int | None = None
        """Posts a day the user may make (``x-user-limit-24hour-*``; None: no cap)."""
        self.app_cap: int | None = None
        """Posts a day the app may make (``x-app-limit-24hour-*``; None: no cap)."""
        self.cap_reset = int(time.time()) + 86400
        """When the 24-hour caps reset (epoch seconds)."""
        self.window_limit = 100
        """Requests to /2/tweets per 15-minute window (``x-rate-limit-*``)."""
        self.processing_checks = 2
        """STATUS answers ``in_progress`` this often before a GIF is processed."""
        self.chunked: dict[str, dict[str, Any]] = {}
        self.fail_processing = False
        """STATUS ends in ``failed`` (an unsupported video) instead of ``succeeded``."""
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [
            ("POST", r"/2/media/upload", self._signed(self._upload)),
            ("GET", r"/2/media/upload", self._signed(self._status)),
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
        if "command" in parts:
            return self._chunked_command(parts)
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

    def _chunked_command(self, parts: dict[str, Part]) -> Reply:
        """INIT / APPEND / FINALIZE of the chunked upload (docs.x.com, media-upload-chunked)."""
        command = parts["command"].text
        if command == "INIT":
            if not all(k in parts for k in ("media_type", "total_bytes", "media_category")):
                return Reply(400, {"title": "Invalid Request", "detail": "INIT fields missing"})
            media_id = str(1880028106020515840 + len(self.media))
            self.chunked[media_id] = {
                "type": parts["media_type"].text,
                "total": int(parts["total_bytes"].text),
                "segments": {},
                "checks": 0,
            }
            self.media[media_id] = {"category": parts["media_category"].text, "alt": None}
            return Reply(
                202,
                {
                    "data": {
                        "id": media_id,
                        "media_key": f"3_{media_id}",
                        "expires_after_secs": 86400,
                    }
                },
            )
        media_id = parts["media_id"].text if "media_id" in parts else ""
        upload = self.chunked.get(media_id)
        if upload is None:
            return Reply(400, {"title": "Invalid Request", "detail": "unknown media id"})
        if command == "APPEND":
            upload["segments"][int(parts["segment_index"].text)] = parts["media"].data
            return Reply(204, None)
        if command == "FINALIZE":
            data = b"".join(upload["segments"][i] for i in sorted(upload["segments"]))
            if len(data) != upload["total"]:
                return Reply(400, {"title": "Invalid Request", "detail": "size mismatch"})
            if upload["type"].startswith("video/"):
                upload["frames"], upload["video"] = video_facts(data)
            else:
                with Image.open(io.BytesIO(data)) as image:
                    upload["frames"] = getattr(image, "n_frames", 1)
            info = {"state": "pending", "check_after_secs": 1}
            return Reply(
                200,
                {"data": {"id": media_id, "size": len(data), "processing_info": info}},
            )
        return Reply(400, {"title": "Invalid Request", "detail": f"bad command {command}"})

    def _status(self, request: Recorded, match: re.Match[str]) -> Reply:
        query = {k: v[0] for k, v in request.query.items()}
        upload = self.chunked.get(query.get("media_id", ""))
        if query.get("command") != "STATUS" or upload is None or "frames" not in upload:
            return Reply(400, {"title": "Invalid Request", "detail": "bad STATUS"})
        upload["checks"] += 1
        done = upload["checks"] > self.processing_checks
        if done and self.fail_processing:
            # what X answers for a video it cannot transcode (docs.x.com, STATUS)
            error = {"code": 1, "name": "InvalidMedia", "message": "Invalid or Unsupported media"}
            failed = {"state": "failed", "progress_percent": 99, "error": error}
            return Reply(200, {"data": {"id": query["media_id"], "processing_info": failed}})
        info = (
            {"state": "succeeded", "progress_percent": 100}
            if done
            else {"state": "in_progress", "check_after_secs": 1, "progress_percent": 50}
        )
        return Reply(200, {"data": {"id": query["media_id"], "processing_info": info}})

    def _limit_headers(self) -> dict[str, str]:
        """The 15-minute window and 24-hour cap headers X sends with each post."""
        posted = len(self.tweets)
        headers = {
            "x-rate-limit-limit": str(self.window_limit),
            "x-rate-limit-remaining": str(max(0, self.window_limit - posted)),
            "x-rate-limit-reset": str(int(time.time()) + 900),
        }
        for name, cap in (("user", self.user_cap), ("app", self.app_cap)):
            if cap is not None:
                headers[f"x-{name}-limit-24hour-limit"] = str(cap)
                headers[f"x-{name}-limit-24hour-remaining"] = str(max(0, cap - posted))
                headers[f"x-{name}-limit-24hour-reset"] = str(self.cap_reset)
        return headers

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
        headers = self._limit_headers()
        caps = [c for c in (self.user_cap, self.app_cap) if c is not None]
        if any(len(self.tweets) >= cap for cap in caps):
            too_many = {"title": "Too Many Requests", "detail": "Too Many Requests"}
            return Reply(429, {**too_many, "type": "about:blank", "status": 429}, headers)
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
            self._limit_headers(),
        )
