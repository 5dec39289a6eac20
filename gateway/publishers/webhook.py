"""The ``webhook`` publisher: POST each post to a URL, as JSON or multipart with images.

JSON body (``format = "json"``)::

    {"id", "rule", "created_at", "text", "lang", "gateway", "idempotency_key",
     "media": [{"filename", "mime", "width", "height", "bytes", "alt"}]}
     (a video's entry adds "duration" and "poster")

A thread (``overflow = "thread"``) is one request: ``text`` is its first part and
``thread`` lists every part, in order; single posts have no ``thread`` field.

With ``format = "multipart"`` the same JSON object is the ``payload`` part and each
image or video is a ``media`` file part, in order, named by ``media[].filename``; a
video's poster frame follows as a ``poster`` part named by ``media[].poster``.  A
video goes as it is (no limits): the receiver decides what it takes.

With a ``secret``, the exact body bytes are signed with HMAC-SHA256 and sent as
``<signature_header>: sha256=<hex>`` (GitHub's convention), so the receiver checks
the bytes it got before parsing them.  Every request also carries the delivery's
``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from gateway.config.publishers import WebhookConfig
from gateway.model import MediaItem, Post, Receipt, VideoLimits
from gateway.publishers.base import Capabilities, OneMessageThread, PublisherContext
from gateway.publishers.payload import post_payload

if TYPE_CHECKING:
    from gateway.publishers.http import ApiClient, StreamedBody


def build(config: WebhookConfig, ctx: PublisherContext) -> WebhookPublisher:
    """Create the publisher a ``webhook`` config entry describes."""
    from gateway.publishers.http import ApiClient, url_secrets

    # No base_url: httpx would add a trailing slash to it, changing the endpoint.
    api = ApiClient(
        "webhook",
        "",
        timeout=config.timeout,
        headers={k: v.get_secret_value() for k, v in config.headers.items()},
        secrets=[*url_secrets(config.url), config.secret, *config.headers.values()],
    )
    return WebhookPublisher(config, api, ctx.gateway_name)


class WebhookPublisher(OneMessageThread):
    """Sends one POST per post; the receiver's JSON ``id``/``url`` become the receipt."""

    def __init__(self, config: WebhookConfig, api: ApiClient, gateway_name: str) -> None:
        self.id = config.id
        self.capabilities = Capabilities(
            max_images=config.max_images, supports_language=True, video=VideoLimits()
        )
        self._config = config
        self._api = api
        self._gateway = gateway_name

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """POST a whole thread as one payload (``text`` = part 1, ``thread`` = all)."""
        payload = post_payload(post, parts[0], media, idempotency_key, self._gateway, parts)
        body, content_type = self._encode(payload, media)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Idempotency-Key": idempotency_key,
        }
        if self._config.secret is not None:
            headers[self._config.signature_header] = sign(self._config.secret, body)
        url = self._config.url.get_secret_value()
        response = self._api.request("POST", url, content=body, headers=headers)
        receipt = receipt_from(response.content)
        # A receiver may echo the request URL, token and all, as its receipt.
        return Receipt(
            remote_id=self._api.scrub(receipt.remote_id) if receipt.remote_id else None,
            url=self._api.scrub(receipt.url) if receipt.url else None,
        )

    def _encode(
        self, payload: dict[str, Any], media: tuple[MediaItem, ...]
    ) -> tuple[bytes | StreamedBody, str]:
        """The body: the JSON document, or a multipart body whose files are streamed
        from disk (a video is never read into memory, even to sign it)."""
        from gateway.publishers.http import multipart_body

        document = json.dumps(payload, ensure_ascii=False)
        if self._config.format == "json":
            return document.encode(), "application/json"
        files: list[tuple[str, tuple[str, bytes | Path, str]]] = [
            ("payload", ("payload.json", document.encode(), "application/json"))
        ]
        files += [
            ("media", (entry["filename"], item.path, item.mime))
            for entry, item in zip(payload["media"], media, strict=True)
        ]
        files += poster_parts(payload["media"], media)
        return multipart_body(files)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()


def poster_parts(
    entries: list[dict[str, Any]], media: tuple[MediaItem, ...]
) -> list[tuple[str, tuple[str, bytes | Path, str]]]:
    """A ``poster`` file part per video, named by its entry's ``poster``."""
    return [
        ("poster", (entry["poster"], item.poster, "image/jpeg"))
        for entry, item in zip(entries, media, strict=True)
        if item.is_video and item.poster is not None and "poster" in entry
    ]


def sign(secret: SecretStr, body: bytes | Iterable[bytes]) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` (bytes, or streamed pieces) under
    ``secret``."""
    mac = hmac.new(secret.get_secret_value().encode(), digestmod=hashlib.sha256)
    for piece in [body] if isinstance(body, bytes) else body:
        mac.update(piece)
    return f"sha256={mac.hexdigest()}"


def receipt_from(body: bytes) -> Receipt:
    """A receipt from the receiver's answer, when it is JSON with ``id``/``url``."""
    from gateway.publishers.http import loads_bounded

    # The post has reached the receiver: an odd answer (too big, too deep, not JSON)
    # costs the receipt, never a retry that would post it twice.
    try:
        answer = loads_bounded(body)
    except ValueError:
        return Receipt()
    if not isinstance(answer, dict):
        return Receipt()
    remote_id, url = answer.get("id"), answer.get("url")
    return Receipt(
        remote_id=str(remote_id) if remote_id is not None else None,
        url=url if isinstance(url, str) else None,
    )


__all__ = ["WebhookConfig", "WebhookPublisher", "build", "sign"]
