"""The ``x`` publisher: X (Twitter) API v2 with OAuth 1.0a user context.

Steps of one post:

1. ``POST /2/media/upload`` per image (multipart ``media`` + ``media_category=tweet_image``)
   → ``{"data": {"id", "media_key", ...}}``; an animated GIF goes through the chunked
   upload as ``tweet_gif``: ``command=INIT`` (``media_type``, ``total_bytes``,
   ``media_category``), ``APPEND`` per 1 MB segment, ``FINALIZE``, then ``GET
   ?command=STATUS`` while ``processing_info.state`` is pending or in progress; a
   video (MP4) goes the same way as ``tweet_video``, read one segment at a time
   (``failed`` processing is a PermanentError);
2. ``POST /2/media/metadata`` with ``{"id", "metadata": {"alt_text": {"text"}}}`` when the
   image has alt text;
3. ``POST /2/tweets`` with ``{"text", "media": {"media_ids"}}`` → 201 ``{"data": {"id", "text"}}``.

Every request is signed by oauthlib (HMAC-SHA1, Authorization header); JSON and
multipart bodies are not part of an OAuth 1.0a signature.  X has no idempotency key:
a retry of a post that did go out is refused as duplicate content (403).  Each create
is recorded as tried (in the store) before it is sent, so a duplicate refusal is a
receipt only when an earlier attempt of the same delivery may have posted it (with
the id remembered from that attempt when there is one); a first attempt refused as
a duplicate is a permanent failure: that text is already there from another post.
A 429 from a used-up 24-hour cap (``x-user-limit-24hour-*``, ``x-app-limit-24hour-*``)
waits until that cap's reset, no attempt counted (``gateway/publishers/http.py``).

A thread (``publish_thread``) posts each later part as a reply (``"reply":
{"in_reply_to_tweet_id": <previous part>}``), without media.  Each part's id is
recorded in the store as soon as it is posted, so a retry skips the parts already
out.  A duplicate refusal of a part an earlier attempt tried also counts as posted;
when its id was never recorded (a crash between posting and recording), the next
part replies to the last part whose id is known, so the thread still hangs together.

Conversations (only with ``read_mentions = true``: reading needs a paid API tier):
``GET /2/users/:id/mentions`` with ``since_id`` (the stored cursor, the newest id
read) paged back with ``pagination_token``, expansions ``author_id`` (username,
name) and ``referenced_tweets.id``.  A 429 is respected: no read before its
``x-rate-limit-reset``.  An answer to a mention on this account is a real reply
(``reply.in_reply_to_tweet_id``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from gateway.config.publishers import XConfig
from gateway.model import (
    MediaItem,
    Mention,
    PermanentError,
    Post,
    Receipt,
    RetryableError,
    VideoLimits,
)
from gateway.publishers.base import Capabilities, KeyValueStore, PublisherContext
from gateway.publishers.http import ReadHold, ServiceError
from gateway.publishers.threads import PostedPart, ThreadLog, part_key, post_parts

if TYPE_CHECKING:
    import httpx

    from gateway.publishers.http import ApiClient

DUPLICATE_MARKERS = ("duplicate content", "status is a duplicate")
TRIED_KEYS_KEPT = 200
"""How many recent posts (and thread parts) remember that a create was attempted."""
CHUNK_BYTES = 1024 * 1024
"""APPEND segment size of a chunked upload (X takes up to 5 MB per segment)."""
X_VIDEO = VideoLimits(
    alone=True,  # one video, or images
    # developer.x.com media best practices (tweet_video): at most 512 MB, 0.5-140 s,
    # 1280x1024, 60 fps; H.264 High profile, yuv420p, aspect ratio 1:3 to 3:1.
    max_bytes=512 * 1024 * 1024,
    max_duration=140.0,
    min_duration=0.5,
    max_side=1280,
    max_pixels=1280 * 1024,
    max_fps=60.0,
)


def build(config: XConfig, ctx: PublisherContext) -> XPublisher:
    """Create the publisher a ``x`` config entry describes."""
    from gateway.publishers.http import ApiClient

    secrets = (config.consumer_key, config.consumer_secret, config.access_token)
    signer = OAuth1Signer(*secrets, config.access_token_secret)
    api = ApiClient(
        "x",
        config.api_base.rstrip("/"),
        timeout=config.timeout,
        auth=signer,
        secrets=[*secrets, config.access_token_secret],
    )
    if config.read_mentions:
        return XMentionsPublisher(config, api, ctx.store)
    return XPublisher(config, api, ctx.store)


class OAuth1Signer:
    """Signs each httpx request with OAuth 1.0a (HMAC-SHA1) in the Authorization header."""

    def __init__(
        self,
        consumer_key: SecretStr,
        consumer_secret: SecretStr,
        token: SecretStr,
        token_secret: SecretStr,
    ) -> None:
        from oauthlib.oauth1 import Client  # type: ignore[import-untyped]

        self._client = Client(
            consumer_key.get_secret_value(),
            client_secret=consumer_secret.get_secret_value(),
            resource_owner_key=token.get_secret_value(),
            resource_owner_secret=token_secret.get_secret_value(),
        )

    def __call__(self, request: httpx.Request) -> httpx.Request:
        """Add a fresh signature (new nonce and timestamp) to ``request``."""
        _, headers, _ = self._client.sign(str(request.url), request.method)
        request.headers["Authorization"] = headers["Authorization"]
        return request

    def __repr__(self) -> str:
        return "OAuth1Signer(***)"


class XPublisher:
    """Uploads images, sets their alt text, then creates the post."""

    capabilities = Capabilities(
        text_counting="weighted",
        max_text=280,
        url_length=23,
        max_images=4,
        max_image_bytes=5_242_880,
        max_alt_text=1000,
        supports_language=False,
        video=X_VIDEO,
    )

    def __init__(
        self,
        config: XConfig,
        api: ApiClient,
        store: KeyValueStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.id = config.id
        self._config = config
        self._api = api
        self._store = store
        self._sleep = sleep

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        """Upload the images and create the post.

        A duplicate refusal counts as sent only when an earlier attempt of this delivery
        may have posted it (its answer lost); otherwise the text was posted before by
        something else and this post is refused for good.
        """
        media_ids = [self._upload(item) for item in media]
        reply_to = post.reply.remote_id if post.reply and post.reply.publisher == self.id else None
        tweet_id = self._create_once(idempotency_key, text, media_ids, reply_to)
        if tweet_id is None:
            return self._receipt(self._remembered(idempotency_key))
        self._remember(idempotency_key, tweet_id)
        return self._receipt(tweet_id)

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Post the parts as a chain of replies; parts already posted are skipped."""
        thread_log = ThreadLog(self._store, self.id, post.id)

        def post_part(n: int, text: str, earlier: list[PostedPart]) -> PostedPart:
            media_ids = [self._upload(item) for item in media] if n == 1 else []
            known = [p.remote_id for p in earlier if p.remote_id is not None]
            if post.reply is not None and post.reply.publisher == self.id:
                known.insert(0, post.reply.remote_id)
            reply_to = known[-1] if known else None
            # None: posted by an attempt that stopped before recording it; id unknown.
            tweet_id = self._create_once(part_key(idempotency_key, n), text, media_ids, reply_to)
            receipt = self._receipt(tweet_id)
            return PostedPart(receipt.remote_id, receipt.url)

        return post_parts(parts, thread_log, post_part)

    def _create_once(
        self, key: str, text: str, media_ids: list[str], reply_to: str | None = None
    ) -> str | None:
        """Create the post; None when X refuses it as a duplicate of an earlier attempt.

        Before the request, ``key`` is recorded as tried: a later attempt of the same
        delivery then knows the first one may have gone out with its answer lost.
        """
        tried_before = self._tried(key)
        if not tried_before:
            self._mark_tried(key)
        try:
            return self._create_post(text, media_ids, reply_to)
        except ServiceError as exc:
            if not is_duplicate(exc):
                raise
            if not tried_before:
                raise PermanentError(
                    f"x: refused as duplicate content: the same text is already on the"
                    f" account from an earlier post ({exc.detail})"
                ) from None
            return None

    @property
    def _tried_key(self) -> str:
        return f"{self.id}:x:tried"

    def _tried_keys(self) -> list[str]:
        try:
            keys = json.loads(self._store.get(self._tried_key) or "[]")
        except ValueError:
            return []
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def _tried(self, key: str) -> bool:
        return key in self._tried_keys()

    def _mark_tried(self, key: str) -> None:
        keys = [*self._tried_keys(), key][-TRIED_KEYS_KEPT:]
        self._store.set(self._tried_key, json.dumps(keys))

    def _upload(self, item: MediaItem) -> str:
        if item.mime == "image/gif":
            media_id = self._upload_chunked(item, "tweet_gif")
        elif item.is_video:
            media_id = self._upload_chunked(item, "tweet_video")
        else:
            answer = self._api.json(
                "POST",
                "/2/media/upload",
                files={"media": (item.path.name, item.path.read_bytes(), item.mime)},
                data={"media_category": "tweet_image", "media_type": item.mime},
            )
            media_id = str(self._api.pick(answer, "data", "id"))
        if item.alt:
            metadata = {"id": media_id, "metadata": {"alt_text": {"text": item.alt}}}
            self._api.request("POST", "/2/media/metadata", json=metadata)
        return media_id

    def _upload_chunked(self, item: MediaItem, category: str) -> str:
        """INIT, APPEND per chunk, FINALIZE, then STATUS until processed (GIFs, video)."""
        total = item.path.stat().st_size
        init = self._api.json(
            "POST",
            "/2/media/upload",
            files={
                "command": (None, "INIT"),
                "media_type": (None, item.mime),
                "total_bytes": (None, str(total)),
                "media_category": (None, category),
            },
        )
        media_id = str(self._api.pick(init, "data", "id"))
        for index, chunk in enumerate(file_chunks(item.path, CHUNK_BYTES)):
            self._api.request(
                "POST",
                "/2/media/upload",
                files={
                    "command": (None, "APPEND"),
                    "media_id": (None, media_id),
                    "segment_index": (None, str(index)),
                    "media": (item.path.name, chunk, item.mime),
                },
            )
        answer = self._api.json(
            "POST",
            "/2/media/upload",
            files={"command": (None, "FINALIZE"), "media_id": (None, media_id)},
        )
        deadline = time.monotonic() + self._config.timeout * 10
        while True:
            info = (answer.get("data") or {}).get("processing_info")
            state = info.get("state") if isinstance(info, dict) else "succeeded"
            if state == "succeeded":
                return media_id
            if state == "failed":
                error = info.get("error") if isinstance(info, dict) else None
                raise PermanentError(f"x: media processing failed: {error}")
            if time.monotonic() >= deadline:
                raise RetryableError(f"x: media {media_id} still processing")
            wait = info.get("check_after_secs") if isinstance(info, dict) else None
            self._sleep(min(float(wait) if isinstance(wait, int | float) else 1.0, 30.0))
            answer = self._api.json(
                "GET", "/2/media/upload", params={"command": "STATUS", "media_id": media_id}
            )

    def _create_post(self, text: str, media_ids: list[str], reply_to: str | None = None) -> str:
        body: dict[str, Any] = {"text": text}
        if media_ids:
            body["media"] = {"media_ids": media_ids}
        if reply_to is not None:
            body["reply"] = {"in_reply_to_tweet_id": reply_to}
        answer = self._api.json("POST", "/2/tweets", json=body)
        return str(self._api.pick(answer, "data", "id"))

    def _receipt(self, tweet_id: str | None) -> Receipt:
        if tweet_id is None:
            return Receipt()
        return Receipt(
            remote_id=tweet_id, url=f"{self._config.web_url.rstrip('/')}/i/web/status/{tweet_id}"
        )

    @property
    def _last_key(self) -> str:
        return f"{self.id}:x:last"

    def _remember(self, idempotency_key: str, tweet_id: str) -> None:
        # Only the latest post: a duplicate refusal is a retry of the post just sent.
        self._store.set(self._last_key, json.dumps({"key": idempotency_key, "id": tweet_id}))

    def _remembered(self, idempotency_key: str) -> str | None:
        try:
            last = json.loads(self._store.get(self._last_key) or "{}")
        except ValueError:
            return None
        return str(last["id"]) if last.get("key") == idempotency_key else None

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()


class XMentionsPublisher(XPublisher):
    """An X publisher that also reads its account's mentions (``read_mentions = true``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._user_id: str | None = None
        self.mentions_hold = ReadHold("x: mentions")
        self._read_every = self._config.mentions_interval.total_seconds()
        self._last_read: float | None = None

    def account_id(self) -> str:
        """The account's user id (``GET /2/users/me``), asked once."""
        if self._user_id is None:
            answer = self._api.json("GET", "/2/users/me")
            self._user_id = str(self._api.pick(answer, "data", "id"))
        return self._user_id

    def read_mentions(
        self, since_id: str | None, limit: int = 100, max_pages: int = 5
    ) -> tuple[list[Mention], str | None]:
        """Mentions newer than ``since_id``, oldest first, and the newest id read.

        Without ``since_id`` one page is read; with it, pages follow
        ``meta.next_token`` back to it.  A 429 holds every read until its reset.
        """
        now = time.monotonic()
        if self._last_read is not None and now - self._last_read < self._read_every:
            return [], since_id  # X's read limit is per 15 minutes: no request yet
        self._last_read = now
        return self.mentions_hold.run(lambda: self._read(since_id, limit, max_pages))

    def _read(
        self, since_id: str | None, limit: int, max_pages: int
    ) -> tuple[list[Mention], str | None]:
        path = f"/2/users/{self.account_id()}/mentions"
        found: list[Mention] = []
        newest = since_id
        token: str | None = None
        for _ in range(max_pages):
            params: dict[str, Any] = {
                "max_results": limit,
                "expansions": "author_id,referenced_tweets.id",
                "tweet.fields": "created_at,lang,author_id,conversation_id,referenced_tweets",
                "user.fields": "username,name",
            }
            if since_id:
                params["since_id"] = since_id
            if token:
                params["pagination_token"] = token
            page = self._api.json("GET", path, params=params)
            users = {
                u["id"]: u
                for u in (page.get("includes") or {}).get("users") or []
                if isinstance(u, dict) and "id" in u
            }
            for tweet in page.get("data") or []:
                mention = mention_from_tweet(self.id, tweet, users, self._config.web_url)
                if mention is None:
                    continue
                found.append(mention)
                if newest is None or _later(mention.remote_id, newest):
                    newest = mention.remote_id
            meta = page.get("meta") or {}
            token = meta.get("next_token") if isinstance(meta.get("next_token"), str) else None
            if not since_id or not token:
                break
        found.sort(key=lambda m: (m.created_at, int(m.remote_id)))
        return found, newest


def _later(a: str, b: str) -> bool:
    """Post ids are snowflakes: numeric strings compared as numbers."""
    return int(a) > int(b) if a.isdigit() and b.isdigit() else a > b


def mention_from_tweet(
    publisher: str, tweet: Any, users: dict[str, Any], web_url: str
) -> Mention | None:
    """One post of ``/2/users/:id/mentions`` as a Mention; ``None`` for a bad shape."""
    if not isinstance(tweet, dict) or not str(tweet.get("id", "")).isdigit():
        return None
    author = users.get(str(tweet.get("author_id")))
    if not isinstance(author, dict):
        return None
    try:
        created = datetime.fromisoformat(str(tweet.get("created_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    refs = tweet.get("referenced_tweets") or []
    parent = next(
        (r.get("id") for r in refs if isinstance(r, dict) and r.get("type") == "replied_to"), None
    )
    username = str(author.get("username") or "")
    lang = tweet.get("lang")
    return Mention(
        publisher=publisher,
        remote_id=str(tweet["id"]),
        author=username,
        author_name=str(author.get("name") or ""),
        author_id=str(author["id"]),
        text=str(tweet.get("text") or ""),
        created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        lang=lang if isinstance(lang, str) and lang not in ("und", "zxx") else None,
        in_reply_to=str(parent) if parent else None,
        root_id=str(tweet.get("conversation_id") or ""),
        url=f"{web_url.rstrip('/')}/{username}/status/{tweet['id']}",
    )


def file_chunks(path: Path, size: int) -> Iterator[bytes]:
    """The file's bytes, ``size`` at a time: one APPEND segment in memory, never the file."""
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def is_duplicate(error: ServiceError) -> bool:
    """Whether X refused a post because the same text was just posted."""
    return error.status == 403 and any(m in error.detail.lower() for m in DUPLICATE_MARKERS)


__all__ = ["OAuth1Signer", "XConfig", "XPublisher", "build", "is_duplicate"]
