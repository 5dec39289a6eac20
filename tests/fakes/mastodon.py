"""A fake Mastodon server: instance limits, async media, statuses with idempotency.

Shapes follow docs.joinmastodon.org (methods/media, methods/statuses, entities/Instance):
``POST /api/v2/media`` answers 200 with ``url`` or 202 with ``url: null``;
``GET /api/v1/media/:id`` answers 206 while processing, then 200; ``POST
/api/v1/statuses`` answers 422 for media still processing, and the same status again
for a repeated ``Idempotency-Key``; a reply (``in_reply_to_id``) to an unknown status
answers 404.

``version`` picks the server generation: Mastodon 3.x has no ``/api/v2/instance``
(404) and answers ``GET /api/v1/instance`` (with ``configuration`` from 3.4 on);
``v1_instance=False`` makes that a 404 too, as on a stripped-down server.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply, Route

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
        self.media: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, dict[str, Any]] = {}
        self._polls_left: dict[str, int] = {}
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        return [
            ("GET", r"/api/v2/instance", self._instance),
            ("GET", r"/api/v1/instance", self._instance_v1),
            ("POST", r"/api/v2/media", self._upload),
            ("GET", r"/api/v1/media/(\w+)", self._media),
            ("POST", r"/api/v1/statuses", self._status),
        ]

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
        media_id = str(100 + len(self.media))
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
        self.media[media_id] = attachment
        self._polls_left[media_id] = self.processing_polls
        if self.processing_polls:
            return Reply(202, {**attachment, "url": None})
        return Reply(200, attachment)

    def _media(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request):
            return UNAUTHORIZED
        media_id = match.group(1)
        if media_id not in self.media:
            return Reply(404, {"error": "Record not found"})
        if self._polls_left[media_id] > 0:
            self._polls_left[media_id] -= 1
            return Reply(206, None)
        return Reply(200, self.media[media_id])

    def _status(self, request: Recorded, match: re.Match[str]) -> Reply:
        if not self._authorized(request):
            return UNAUTHORIZED
        key = request.header("idempotency-key")
        if key and key in self._by_key:
            return Reply(200, self._by_key[key])
        body = request.json()
        media_ids = [str(m) for m in body.get("media_ids", [])]
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
        status = {
            "id": status_id,
            "uri": f"{self.url}/users/bot/statuses/{status_id}",
            "url": f"{self.url}/@bot/{status_id}",
            "content": f"<p>{body['status']}</p>",
            "visibility": body.get("visibility", "public"),
            "spoiler_text": body.get("spoiler_text", ""),
            "language": body.get("language"),
            "in_reply_to_id": str(reply_to) if reply_to is not None else None,
            "media_attachments": [self.media[m] for m in media_ids],
        }
        self.statuses[status_id] = status
        if key:
            self._by_key[key] = status
        return Reply(200, status)
