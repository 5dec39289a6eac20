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

Mentions (docs.x.com, GET /2/users/:id/mentions): :meth:`FakeX.mention` makes another
account post a mention; the endpoint answers newest first, ``max_results`` 5..100,
``since_id``, ``pagination_token`` (``meta.next_token``), ``includes.users`` for the
``author_id`` expansion, ``meta.newest_id``/``oldest_id``/``result_count``, and the
15-minute window headers (``x-rate-limit-*``; the fake's ``mentions_window`` reads,
then 429).  GET /2/users/me → ``{"data": {"id", "name", "username"}}``.  A reply to a
mention is a post with ``reply.in_reply_to_tweet_id`` set to the mention's id.
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
        self.user = {"id": "1500000000000000001", "name": "Pool Cam", "username": "poolcam"}
        self.users: dict[str, dict[str, str]] = {}
        self.mentions_window = 75
        """Mention reads per 15-minute window (docs.x.com: 75 per user on Pro)."""
        self.mention_reads = 0
        self.window_reset = int(time.time()) + 900
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [
            ("POST", r"/2/media/upload", self._signed(self._upload)),
            ("GET", r"/2/media/upload", self._signed(self._status)),
            ("POST", r"/2/media/metadata", self._signed(self._metadata)),
            ("POST", r"/2/tweets", self._signed(self._tweet)),
            ("GET", r"/2/users/me$", self._signed(self._me)),
            ("GET", r"/2/users/(\d+)/mentions$", self._signed(self._mentions)),
        ]

    def mention(self, username: str, text: str, reply_to: str | None = None) -> str:
        """``username`` posts ``text`` mentioning the account; returns the post id."""
        user = self.users.setdefault(
            username,
            {
                "id": str(1600000000000000000 + len(self.users)),
                "name": username.title(),
                "username": username,
            },
        )
        tweet_id = str(1445880548472328192 + len(self.tweets))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        self.tweets[tweet_id] = {
            "text": text,
            "media_ids": [],
            "reply_to": reply_to,
            "author_id": user["id"],
            "created_at": stamp,
            "mention": True,
        }
        return tweet_id

    def _me(self, request: Recorded, match: re.Match[str]) -> Reply:
        return Reply(200, {"data": self.user})

    def _mentions(self, request: Recorded, match: re.Match[str]) -> Reply:
        if match.group(1) != self.user["id"]:
            return Reply(403, {"title": "Forbidden", "detail": "not your mentions"})
        self.mention_reads += 1
        headers = {
            "x-rate-limit-limit": str(self.mentions_window),
            "x-rate-limit-remaining": str(max(0, self.mentions_window - self.mention_reads)),
            "x-rate-limit-reset": str(self.window_reset),
        }
        if self.mention_reads > self.mentions_window:
            body = {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429}
            return Reply(429, body, headers)
        q = {k: v[0] for k, v in request.query.items()}
        limit = int(q.get("max_results", "10"))
        if not 5 <= limit <= 100:
            return Reply(400, {"title": "Invalid Request", "detail": "max_results out of range"})
        ids = sorted((i for i, t in self.tweets.items() if t.get("mention")), key=int, reverse=True)
        if "since_id" in q:
            ids = [i for i in ids if int(i) > int(q["since_id"])]
        if "pagination_token" in q:
            ids = [i for i in ids if int(i) < int(q["pagination_token"])]
        page = ids[:limit]
        if not page:
            return Reply(200, {"meta": {"result_count": 0}}, headers)
        by_id = {u["id"]: u for u in self.users.values()}
        data = []
        for i in page:
            t = self.tweets[i]
            tweet: dict[str, Any] = {
                "id": i,
                "text": t["text"],
                "author_id": t["author_id"],
                "created_at": t["created_at"],
                "lang": "en",
                "conversation_id": i,
                "edit_history_tweet_ids": [i],
            }
            if t["reply_to"]:
                tweet["referenced_tweets"] = [{"type": "replied_to", "id": t["reply_to"]}]
            data.append(tweet)
        meta: dict[str, Any] = {
            "result_count": len(page),
            "newest_id": page[0],
            "oldest_id": page[-1],
        }
        if len(ids) > limit:
            meta["next_token"] = page[-1]
        users = [by_id[a] for a in dict.fromkeys(t["author_id"] for t in data)]
        return Reply(200, {"data": data, "includes": {"users": users}, "meta": meta}, headers)

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
