"""A fake Mastodon server: instance limits, async media, statuses with idempotency.

Shapes follow docs.joinmastodon.org (methods/media, methods/statuses, entities/Instance):
``POST /api/v2/media`` answers 200 with ``url`` or 202 with ``url: null``;
``GET /api/v1/media/:id`` answers 206 while processing, then 200; ``POST
/api/v1/statuses`` answers 422 for media still processing, and the same status again
for a repeated ``Idempotency-Key``; a reply (``in_reply_to_id``) to an unknown status
answers 404.

Learned behaviours: ``GET /api/v1/media/:id`` answers 404 once a file is attached or
removed (``expire_unattached_media``: Mastodon deletes unattached uploads after about
a day); an Idempotency-Key is remembered for ``key_lifetime`` (an hour); with
``request_limit``/``media_limit`` set, every answer carries ``X-RateLimit-Limit``,
``-Remaining`` (counting down) and ``-Reset`` (ISO 8601) of its bucket, and a request
over the limit answers 429; ``content`` is HTML as Mastodon renders it; the account's
own statuses are listed newest first (``verify_credentials``,
``/api/v1/accounts/:id/statuses`` with ``max_id``).

``version`` picks the server generation: Mastodon 3.x has no ``/api/v2/instance``
(404) and answers ``GET /api/v1/instance`` (with ``configuration`` from 3.4 on);
``v1_instance=False`` makes that a 404 too, as on a stripped-down server.
"""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime
from typing import Any

from tests.fakes.media import video_facts
from tests.fakes.server import FakeServer, Fault, Part, Recorded, Reply, Route

UNAUTHORIZED = Reply(401, {"error": "The access token is invalid"})
NOT_FOUND = Reply(404, b"<!DOCTYPE html><html><body>The page you are looking for isn't here.")


class FakeMastodon(FakeServer):
    """Mastodon's client API, enough to post statuses with images."""

    service = "mastodon"

    def __init__(
        self,
        token: str = "mastodon-token",
        *,
        max_characters: int = 500,
        version: str = "4.3.0",
        v1_instance: bool = True,
    ) -> None:
        self.token = token
        self.version = version
        self.v1_instance = v1_instance
        self.instance_config: dict[str, Any] = {
            "statuses": {
                "max_characters": max_characters,
                "max_media_attachments": 4,
                "characters_reserved_per_url": 23,
            },
            "media_attachments": {
                "supported_mime_types": ["image/jpeg", "image/png"],
                "image_size_limit": 16_777_216,
                "image_matrix_limit": 33_177_600,
                "description_limit": 1500,
            },
        }
        self.processing_polls = 0
        """How many 206 answers each upload gets before it is processed (0: sync 200)."""
        self.thumbnails: dict[str, bytes | None] = {}
        """A video upload's ``thumbnail`` part (None: sent without one)."""
        self.fail_processing = False
        """Processing fails: ``GET /api/v1/media/:id`` answers 422 once it is over."""
        self.media: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, tuple[float, dict[str, Any]]] = {}
        self._polls_left: dict[str, int] = {}
        self.now = time.time
        """The server's clock (a test moves it to age keys and media)."""
        self.key_lifetime = 3600.0
        """How long an Idempotency-Key is remembered (Mastodon: about an hour)."""
        self.media_lifetime = 86400.0
        """How long unattached media are kept (Mastodon removes them after about a day)."""
        self.uploaded_at: dict[str, float] = {}
        self.attached: set[str] = set()
        self.request_limit: int | None = None
        """Requests per 5 minutes (``X-RateLimit-*`` on every answer; None: no headers)."""
        self.media_limit: int | None = None
        """Media uploads per 30 minutes (their own ``X-RateLimit-*``)."""
        self._windows: dict[str, tuple[float, int]] = {}
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [
            ("GET", r"/api/v2/instance", self._instance),
            ("GET", r"/api/v1/instance", self._instance_v1),
            ("POST", r"/api/v2/media", self._upload),
            ("GET", r"/api/v1/media/(\w+)", self._media),
            ("POST", r"/api/v1/statuses", self._status),
            ("GET", r"/api/v1/accounts/verify_credentials", self._me),
            ("GET", r"/api/v1/accounts/(\w+)/statuses", self._account_statuses),
        ]

    def dispatch(self, request: Recorded) -> Reply | Fault:
        """Answer, with the rate-limit headers of the request's bucket when enabled
        (a request over the limit is refused with 429 and has no effect)."""
        media = request.method == "POST" and request.path == "/api/v2/media"
        bucket, limit, window = (
            ("media", self.media_limit, 1800.0)
            if media
            else ("requests", self.request_limit, 300.0)
        )
        if limit is None or not self._authorized(request):
            return super().dispatch(request)
        start, used = self._windows.get(bucket, (self.now(), 0))
        if self.now() - start >= window:
            start, used = self.now(), 0
        used += 1
        self._windows[bucket] = (start, used)
        reset = datetime.fromtimestamp(start + window, UTC).isoformat().replace("+00:00", "Z")
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used)),
            "X-RateLimit-Reset": reset,  # ISO 8601, as Mastodon sends it
        }
        if used > limit:
            with self._lock:
                self.requests.append(request)
            return Reply(429, {"error": "Too many requests"}, headers)
        answer = super().dispatch(request)
        if not isinstance(answer, Reply):
            return answer
        return Reply(answer.status, answer.body, {**answer.headers, **headers})

    def expire_unattached_media(self) -> None:
        """Remove every unattached upload, as Mastodon's cleanup does after a day."""
        for media_id in list(self.media):
            if media_id not in self.attached:
                del self.media[media_id]

    def _me(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request):
            return UNAUTHORIZED
        return Reply(200, {"id": "109000000000000001", "username": "bot", "acct": "bot"})

    def _account_statuses(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request) or match.group(1) != "109000000000000001":
            return Reply(404, {"error": "Record not found"})
        query = {k: v[0] for k, v in request.query.items()}
        limit = min(int(query.get("limit", "20")), 40)
        newest_first = sorted(self.statuses.values(), key=lambda s: int(s["id"]), reverse=True)
        if "max_id" in query:
            newest_first = [s for s in newest_first if int(s["id"]) < int(query["max_id"])]
        return Reply(200, newest_first[:limit])

    def _authorized(self, request: Recorded) -> bool:
        return request.header("authorization") == f"Bearer {self.token}"

    def _instance(self, request: Recorded, match: re.Match[str]) -> Reply:
        if self.version.startswith(("1.", "2.", "3.")):
            return NOT_FOUND
        return Reply(
            200,
            {"domain": "fake.example", "version": "4.3.0", "configuration": self.instance_config},
        )

    def _instance_v1(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self.v1_instance:
            return NOT_FOUND
        instance: dict[str, Any] = {
            "uri": "fake.example",
            "title": "Fake",
            "version": self.version,
            "urls": {"streaming_api": "wss://fake.example"},
        }
        if tuple(int(n) for n in self.version.split(".")[:2]) >= (3, 4):
            instance["configuration"] = self.instance_config
        return Reply(200, instance)

    def _upload(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request):
            return UNAUTHORIZED
        parts = {p.name: p for p in request.parts}
        if "file" not in parts or not parts["file"].content_type:
            return Reply(422, {"error": "Validation failed: File content type is invalid"})
        media_id = str(100 + len(self.uploaded_at))
        url = f"{self.url}/media/{media_id}.jpg"
        description = parts["description"].text if "description" in parts else None
        attachment: dict[str, Any] = {
            "id": media_id,
            "type": "image",
            "url": url,
            "description": description,
            "preview_url": url,
            "meta": {},
        }
        if parts["file"].content_type.startswith("video/"):
            video = self._video(parts)
            if isinstance(video, Reply):
                return video
            attachment.update(video)
            thumb = parts.get("thumbnail")
            self.thumbnails[media_id] = thumb.data if thumb is not None else None
        self.media[media_id] = attachment
        self.uploaded_at[media_id] = self.now()
        self._polls_left[media_id] = self.processing_polls
        if self.processing_polls:
            return Reply(202, {**attachment, "url": None})
        return Reply(200, attachment)

    def _video(self, parts: dict[str, Part]) -> dict[str, Any] | Reply:
        """A video upload: decoded with PyAV (422 when it is none), its thumbnail kept.

        Mastodon transcodes every video asynchronously: 202 and url null, always.
        """
        try:
            frames, facts = video_facts(parts["file"].data)
        except ValueError:
            return Reply(422, {"error": "Validation failed: File content type is invalid"})
        if self.processing_polls == 0:
            self.processing_polls = 1
        return {
            "type": "gifv",  # a silent MP4 becomes a looping gifv, as Mastodon does
            "meta": {"original": {**facts, "frames": frames}},
        }

    def _media(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request):
            return UNAUTHORIZED
        media_id = match.group(1)
        if media_id not in self.media or media_id in self.attached:
            return Reply(404, {"error": "Record not found"})
        if self.fail_processing and self._polls_left[media_id] == 0:
            # app/controllers/api/v1/media_controller.rb: check_processing
            return Reply(422, {"error": "Error processing thumbnail for uploaded media"})
        if self._polls_left[media_id] > 0:
            self._polls_left[media_id] -= 1
            return Reply(206, None)
        return Reply(200, self.media[media_id])

    def _status(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request):
            return UNAUTHORIZED
        key = request.header("idempotency-key")
        if key and key in self._by_key:
            remembered_at, remembered = self._by_key[key]
            if self.now() - remembered_at < self.key_lifetime:
                return Reply(200, remembered)
        body = request.json()
        media_ids = [str(m) for m in body.get("media_ids", [])]
        if any(m not in self.media or m in self.attached for m in media_ids):
            return Reply(422, {"error": "Validation failed: media not found"})
        kinds = [self.media[m]["type"] for m in media_ids]
        if len(kinds) > 1 and "gifv" in kinds:
            # PostStatusService#validate_media!: images_and_video
            return Reply(
                422, {"error": "Cannot attach a video to a post that already contains images"}
            )
        if any(self._polls_left.get(m, 1) > 0 for m in media_ids):
            return Reply(
                422,
                {
                    "error": "Cannot attach files that have not finished "
                    "processing. Try again in a moment!"
                },
            )
        reply_to = body.get("in_reply_to_id")
        if reply_to is not None and str(reply_to) not in self.statuses:
            return Reply(404, {"error": "Record not found"})
        status_id = str(110000000000000000 + len(self.statuses))
        created = datetime.fromtimestamp(self.now(), UTC).isoformat(timespec="milliseconds")
        status = {
            "id": status_id,
            "created_at": created.replace("+00:00", "Z"),
            "uri": f"{self.url}/users/bot/statuses/{status_id}",
            "url": f"{self.url}/@bot/{status_id}",
            "content": _html(body["status"]),
            "visibility": body.get("visibility", "public"),
            "spoiler_text": body.get("spoiler_text", ""),
            "language": body.get("language"),
            "in_reply_to_id": str(reply_to) if reply_to is not None else None,
            "media_attachments": [self.media[m] for m in media_ids],
        }
        self.statuses[status_id] = status
        self.attached.update(media_ids)
        if key:
            self._by_key[key] = (self.now(), status)
        return Reply(200, status)


def _html(text: str) -> str:
    """A status's text as Mastodon renders ``content``: escaped, paragraphs and breaks,
    links wrapped with their scheme hidden."""
    paragraphs = []
    for paragraph in html.escape(text, quote=False).split("\n\n"):
        linked = re.sub(
            r"https?://[^\s<]+",
            lambda m: (
                f'<a href="{m.group()}" rel="nofollow noopener" target="_blank">'
                f'<span class="invisible">{m.group().split("//")[0]}//</span>'
                f'<span class="">{m.group().split("//", 1)[1]}</span></a>'
            ),
            paragraph,
        )
        paragraphs.append("<p>" + linked.replace("\n", "<br />") + "</p>")
    return "".join(paragraphs)
