"""The ``mastodon`` publisher (any server speaking Mastodon's client API).

Steps of one post:

1. ``POST /api/v2/media`` per image or video (multipart ``file`` + ``description`` as
   alt text; a video's poster frame as ``thumbnail``).
   The server answers 200 with a ``url``, or 202 with ``url: null`` while it processes
   the file; then ``GET /api/v1/media/:id`` is polled (206 while processing, 200 done,
   422 when processing failed: a PermanentError, that file will not do).
2. ``POST /api/v1/statuses`` with ``status``, ``media_ids``, ``visibility``,
   ``spoiler_text``, ``language`` and the delivery's ``Idempotency-Key`` header, so a
   retried request returns the status the first one created.

Between attempts of one delivery the store keeps its first try's time and its media
ids: a retry reuses the uploads while ``GET /api/v1/media/:id`` still finds them
(unattached media are deleted after about a day), and a retry after the server has
forgotten the Idempotency-Key (it keeps keys about an hour) first looks for the
status among the account's own since the first try (same text) and takes it as
sent.  ``X-RateLimit-Remaining``/``-Reset`` of each answer are kept per bucket
(requests, media uploads): a post that would run into the limit waits for its reset
(``RateLimitedError``: no attempt counted) instead of meeting the 429.

A thread (``publish_thread``) posts each later part as a reply (``in_reply_to_id`` =
the previous part's status), with the same visibility, content warning and language
and no media; each part has its own Idempotency-Key and its status id is recorded in
the store as soon as it is posted, so a retry continues the thread where it stopped.

Limits come from ``GET /api/v2/instance`` (``configuration.statuses`` and
``configuration.media_attachments``; on a 4xx, as from Mastodon 3.x, ``GET
/api/v1/instance``, whose ``configuration`` has the same fields since 3.4 and
``max_toot_chars`` on Pleroma and glitch-soc; on a 4xx again, the defaults), fetched
once per process by the delivery worker's thread (``prepare()``, else the first
publish), and kept in the gateway's store as a fallback for when the server is
unreachable.  ``capabilities`` never touches the network, so building and starting
the gateway never waits for the server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.publishers import MastodonConfig
from gateway.model import (
    MediaItem,
    Mention,
    PermanentError,
    Post,
    PublishError,
    RateLimitedError,
    Receipt,
    RetryableError,
    VideoLimits,
    narrower_visibility,
)
from gateway.publishers.base import Capabilities, KeyValueStore, PublisherContext
from gateway.publishers.threads import PostedPart, ThreadLog, part_key, post_parts

if TYPE_CHECKING:
    from gateway.publishers.http import ApiClient

log = logging.getLogger(__name__)

LIMITS_RETRY_SECONDS = 300.0
MEDIA_REUSE_SECONDS = 20 * 3600.0
"""Media ids of an earlier attempt are reused this long (unattached media live a day)."""
KEY_LOOKUP_AFTER = 3600.0 - 300.0
"""Mastodon keeps an Idempotency-Key about an hour: a retry after (nearly) that long
looks for the status among the account's own before posting again."""
STREAM_SILENCE_SECONDS = 70.0
"""A stream silent this long is dead (Mastodon sends a heartbeat every 15 s or so)."""
MAX_EVENT_CHARS = 1024 * 1024
"""The largest server-sent event read; a larger one is dropped."""
STATUS_LOOKUP_PAGES = 5
"""Pages of 40 own statuses looked through at most."""


def build(config: MastodonConfig, ctx: PublisherContext) -> MastodonPublisher:
    """Create the publisher a ``mastodon`` config entry describes."""
    from gateway.publishers.http import ApiClient

    api = ApiClient(
        "mastodon",
        config.base_url.rstrip("/"),
        timeout=config.timeout,
        headers={"Authorization": f"Bearer {config.access_token.get_secret_value()}"},
        secrets=[config.access_token],
    )
    return MastodonPublisher(config, api, ctx.store)


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    """The limits a Mastodon server announces in ``/api/v2/instance``."""

    max_characters: int = 500
    characters_reserved_per_url: int = 23
    max_media_attachments: int = 4
    image_size_limit: int = 10_485_760
    image_matrix_limit: int = 16_777_216
    description_limit: int = 1500
    # Video limits of /api/v2/instance ``configuration.media_attachments``
    # (docs.joinmastodon.org/entities/Instance): mastodon.social answers
    # video_size_limit 103809024 (99 MiB), video_frame_rate_limit 120 and
    # video_matrix_limit 8294400 (3840x2160); a server that leaves them out (an older
    # Mastodon, Pleroma) gets the 40 MB / 60 fps / 2304000 px (1920x1200) of Mastodon 3.x.
    video_size_limit: int = 41_943_040
    video_frame_rate_limit: int = 60
    video_matrix_limit: int = 2_304_000

    @classmethod
    def from_instance(cls, instance: dict[str, Any]) -> InstanceLimits:
        """Read the limits, keeping defaults for anything an older server leaves out."""
        config = instance.get("configuration") or {}
        statuses = config.get("statuses") or {}
        media = config.get("media_attachments") or {}
        found = {
            # Pleroma, Akkoma and glitch-soc's v1 answer: max_toot_chars.
            "max_characters": statuses.get("max_characters") or instance.get("max_toot_chars"),
            "characters_reserved_per_url": statuses.get("characters_reserved_per_url"),
            "max_media_attachments": statuses.get("max_media_attachments"),
            "image_size_limit": media.get("image_size_limit"),
            "image_matrix_limit": media.get("image_matrix_limit"),
            "description_limit": media.get("description_limit"),
            "video_size_limit": media.get("video_size_limit"),
            "video_frame_rate_limit": media.get("video_frame_rate_limit"),
            "video_matrix_limit": media.get("video_matrix_limit"),
        }
        return cls(**{k: v for k, v in found.items() if isinstance(v, int) and v > 0})

    def capabilities(self, spoiler_text: str) -> Capabilities:
        """What composition must fit; the content warning counts toward the text limit."""
        return Capabilities(
            text_counting="graphemes",
            max_text=max(1, self.max_characters - len(spoiler_text)),
            url_length=self.characters_reserved_per_url,
            max_images=self.max_media_attachments,
            max_image_bytes=self.image_size_limit,
            max_image_pixels=self.image_matrix_limit,
            max_alt_text=self.description_limit,
            supports_language=True,
            video=VideoLimits(
                # PostStatusService: a status has images or one video, not both
                alone=True,
                max_bytes=self.video_size_limit,
                max_fps=self.video_frame_rate_limit,
                max_pixels=self.video_matrix_limit,
            ),
        )


class MastodonPublisher:
    """Uploads images, waits for them to process, then creates the status."""

    def __init__(
        self,
        config: MastodonConfig,
        api: ApiClient,
        store: KeyValueStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = config.id
        self._config = config
        self._api = api
        self._store = store
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._limits = self._stored_limits()
        self._limits_fresh = False
        self._next_fetch = 0.0
        self._pinned: Capabilities | None = None
        self._now: Callable[[], float] = time.time
        self._rate: dict[str, tuple[int, float]] = {}
        """Rate-limit bucket → (requests remaining, epoch of its reset)."""
        self._account_id: str | None = None
        self._stream: Any = None

    @property
    def capabilities(self) -> Capabilities:
        """The limits known now: the server's once fetched, else stored or default ones.

        Never touches the network: composition reads this for every post.
        """
        if self._pinned is not None:
            return self._pinned
        # No lock: a fetch in progress holds it, and reading one attribute is atomic.
        return self._limits.capabilities(self._config.spoiler_text)

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        # Lets an operator or a test pin the limits instead of asking the server.
        self._pinned = value

    def prepare(self) -> None:
        """Fetch the server's limits (called in the delivery worker's thread at start)."""
        self.limits()

    def limits(self) -> InstanceLimits:
        """The server's limits: fetched once per process; on failure, retried later."""
        with self._lock:
            if not self._limits_fresh and self._clock() >= self._next_fetch:
                try:
                    instance = self._instance()
                except RetryableError as exc:
                    self._next_fetch = self._clock() + LIMITS_RETRY_SECONDS
                    log.warning("%s: using stored limits for now: %s", self.id, exc)
                else:
                    if instance is not None:
                        self._limits = InstanceLimits.from_instance(instance)
                        self._store.set(self._limits_key, json.dumps(asdict(self._limits)))
                    self._limits_fresh = True
            return self._limits

    def _instance(self) -> dict[str, Any] | None:
        """The server's instance info: v2 (Mastodon 4), else v1 (3.x, Pleroma), else None.

        A server refusing both (4xx) keeps the stored or default limits: the limits are
        an optimisation, never a reason to lose a post.
        """
        try:
            return self._api.json("GET", "/api/v2/instance")
        except PermanentError as exc:
            log.info("%s: /api/v2/instance refused (%s); trying /api/v1/instance", self.id, exc)
        try:
            return self._api.json("GET", "/api/v1/instance")
        except PermanentError as exc:
            log.warning("%s: no instance info (%s); using stored or default limits", self.id, exc)
        return None

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        """Upload the images, then create the status; raise RetryableError/PermanentError."""
        self.limits()
        self._check_rate_limits(uploads=len(media))
        found = self._posted_before(idempotency_key, text)
        if found is not None:
            return found
        media_ids = self._media_ids(idempotency_key, media)
        return self._create_status(post, text, media_ids, idempotency_key)

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Post the parts as a chain of replies; parts already posted are skipped."""
        self.limits()

        def post_part(n: int, text: str, earlier: list[PostedPart]) -> PostedPart:
            part_media = media if n == 1 else ()
            self._check_rate_limits(uploads=len(part_media))
            reply_to = earlier[-1].remote_id if earlier else None
            key = part_key(idempotency_key, n)
            receipt = self._posted_before(key, text)
            if receipt is None:
                media_ids = self._media_ids(key, part_media)
                receipt = self._create_status(post, text, media_ids, key, reply_to)
            return PostedPart(receipt.remote_id, receipt.url)

        return post_parts(parts, ThreadLog(self._store, self.id, post.id), post_part)

    # -- what a delivery keeps between attempts -------------------------------

    @property
    def _attempts_key(self) -> str:
        return f"{self.id}:mastodon:attempts"

    def _attempts(self) -> dict[str, Any]:
        """Per idempotency key of an unfinished delivery: its first try, its media ids."""
        try:
            stored = json.loads(self._store.get(self._attempts_key) or "{}")
        except ValueError:
            return {}
        return stored if isinstance(stored, dict) else {}

    def _attempt(self, key: str) -> dict[str, Any]:
        entry = self._attempts().get(key)
        return entry if isinstance(entry, dict) else {}

    def _save_attempt(self, key: str, entry: dict[str, Any] | None) -> None:
        attempts = self._attempts()
        if entry is None:
            attempts.pop(key, None)
        else:
            attempts[key] = entry
        self._store.set(self._attempts_key, json.dumps(attempts))

    # -- media -------------------------------------------------------------------

    def _media_ids(self, key: str, media: tuple[MediaItem, ...]) -> list[str]:
        """The delivery's media ids: those an earlier attempt uploaded while the server
        still has them (unattached media live about a day), else new uploads."""
        entry = self._attempt(key)
        kept = entry.get("media")
        known: list[list[Any]] = kept if isinstance(kept, list) else []
        ids: list[str] = []
        for n, item in enumerate(media):
            reused = known[n] if n < len(known) and isinstance(known[n], list) else None
            if reused and self._still_there(str(reused[0]), float(reused[1])):
                ids.append(str(reused[0]))
                continue
            ids.append(self._upload(item))
            known = [*known[:n], [ids[-1], self._now()], *known[n + 1 :]]
            entry["media"] = known
            self._save_attempt(key, entry)  # kept at once: a later failure keeps it
        return ids

    def _still_there(self, media_id: str, uploaded_at: float) -> bool:
        """Whether an uploaded, unattached file can still be attached."""
        if self._now() - uploaded_at >= MEDIA_REUSE_SECONDS:
            return False
        try:
            response = self._api.request("GET", f"/api/v1/media/{media_id}")
        except PermanentError:
            # 404: removed (unattached media are deleted after about a day)
            log.info("%s: media %s is gone; uploading again", self.id, media_id)
            return False
        if response.status_code == 206:
            self._wait_processed(media_id)
        log.info("%s: reusing media %s uploaded by an earlier attempt", self.id, media_id)
        return True

    def _upload(self, item: MediaItem) -> str:
        try:
            from gateway.publishers.http import multipart_body

            body, content_type = multipart_body(
                media_files(item), {"description": item.alt} if item.alt else {}
            )
            attachment = self._api.json(
                "POST",
                "/api/v2/media",
                content=body,
                headers={"Content-Type": content_type, "Content-Length": str(len(body))},
            )
        finally:
            self._note_rate_limit("media uploads")
        media_id = str(self._api.pick(attachment, "id"))
        if attachment.get("url") is None:
            self._wait_processed(media_id)
        return media_id

    # -- rate limits ---------------------------------------------------------------

    def _note_rate_limit(self, bucket: str) -> None:
        """Keep what ``X-RateLimit-Remaining``/``-Reset`` of the last answer said."""
        from gateway.publishers.http import retry_after

        headers = {k.lower(): v for k, v in self._api.last_headers.items()}
        try:
            remaining = int(headers["x-ratelimit-remaining"])
        except (KeyError, ValueError):
            return
        wait = retry_after({"x-ratelimit-reset": headers.get("x-ratelimit-reset", "")})
        if wait is not None:
            self._rate[bucket] = (remaining, self._now() + wait)

    def _check_rate_limits(self, uploads: int) -> None:
        """Wait for a limit's reset before a post would run into it (no 429, no attempt)."""
        needs = {"media uploads": uploads, "requests": 1 + 2 * uploads}
        now = self._now()
        for bucket, needed in needs.items():
            remaining, reset = self._rate.get(bucket, (needed, 0.0))
            if needed and remaining < needed and reset > now:
                # Waited for once: the next try's answer tells the counters anew.
                del self._rate[bucket]
                raise RateLimitedError(
                    f"mastodon: {remaining} {bucket} left in the rate limit; slowing down",
                    retry_after=reset - now,
                )

    # -- idempotency beyond the key's lifetime ---------------------------------------

    def _posted_before(self, key: str, text: str) -> Receipt | None:
        """The status an earlier attempt of this delivery created, looked up among the
        account's own recent statuses once the server has forgotten the key (an hour)."""
        first = self._attempt(key).get("first")
        if not isinstance(first, int | float) or self._now() - first < KEY_LOOKUP_AFTER:
            return None
        wanted = _plain(text)
        for status in self._own_statuses_since(first - 60):
            if _plain(_html_text(str(status.get("content") or ""))) == wanted:
                log.info("%s: found status %s from an earlier attempt", self.id, status["id"])
                self._save_attempt(key, None)
                return Receipt(remote_id=str(status["id"]), url=status.get("url") or None)
        return None

    def _own_statuses_since(self, since: float) -> list[dict[str, Any]]:
        """The account's statuses created after ``since`` (epoch), newest first."""
        from datetime import datetime

        if self._account_id is None:
            me = self._api.json("GET", "/api/v1/accounts/verify_credentials")
            self._account_id = str(self._api.pick(me, "id"))
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 40, "exclude_reblogs": "true"}
        for _ in range(STATUS_LOOKUP_PAGES):
            response = self._api.request(
                "GET", f"/api/v1/accounts/{self._account_id}/statuses", params=params
            )
            page = _json_or_none(response)
            if not isinstance(page, list) or not page:
                return out
            for status in page:
                if not isinstance(status, dict) or "id" not in status:
                    continue
                try:
                    created = datetime.fromisoformat(
                        str(status.get("created_at")).replace("Z", "+00:00")
                    ).timestamp()
                except ValueError:
                    continue
                if created < since:
                    return out
                out.append(status)
            params["max_id"] = str(page[-1].get("id"))
        return out

    def _wait_processed(self, media_id: str) -> None:
        deadline = self._clock() + self._config.media_timeout
        while True:
            response = self._api.request("GET", f"/api/v1/media/{media_id}")
            # 206 means still processing; 200 carries the finished file's url.
            if response.status_code == 200 and self._api.pick(_json_or_none(response), "url"):
                return
            if self._clock() >= deadline:
                raise RetryableError(f"mastodon: media {media_id} still processing")
            self._sleep(self._config.media_poll_interval)

    def _create_status(
        self,
        post: Post,
        text: str,
        media_ids: list[str],
        idempotency_key: str,
        in_reply_to: str | None = None,
    ) -> Receipt:
        body: dict[str, Any] = {"status": text, "visibility": self._config.visibility}
        if in_reply_to is None and post.reply is not None and post.reply.publisher == self.id:
            # A reply to a mention: a real reply, never wider than the mention.
            in_reply_to = post.reply.remote_id
            body["visibility"] = narrower_visibility(self._config.visibility, post.reply.visibility)
        elif post.reply is not None and in_reply_to is not None:
            body["visibility"] = narrower_visibility(self._config.visibility, post.reply.visibility)
        if in_reply_to is not None:
            body["in_reply_to_id"] = in_reply_to
        if media_ids:
            body["media_ids"] = media_ids
            body["sensitive"] = self._config.sensitive
        if self._config.spoiler_text:
            body["spoiler_text"] = self._config.spoiler_text
        if post.lang:
            body["language"] = mastodon_language(post.lang)
        entry = self._attempt(idempotency_key)
        if "first" not in entry:
            entry["first"] = self._now()  # before the request: its answer may be lost
            self._save_attempt(idempotency_key, entry)
        try:
            status = self._api.json(
                "POST",
                "/api/v1/statuses",
                json=body,
                headers={"Idempotency-Key": idempotency_key},
            )
        finally:
            self._note_rate_limit("requests")
        status_id = str(self._api.pick(status, "id"))
        self._save_attempt(idempotency_key, None)
        return Receipt(remote_id=status_id, url=status.get("url") or status.get("uri"))

    def read_mentions(
        self, since_id: str | None, limit: int = 40, max_pages: int = 5
    ) -> tuple[list[Mention], str | None]:
        """Mentions newer than ``since_id``, oldest first, and the newest id seen.

        ``GET /api/v1/notifications?types[]=mention`` pages backwards through the
        ``Link`` header's ``next`` (``max_id``) until ``since_id``; the rate-limit
        headers are kept like a post's (a read that would meet a 429 waits instead).
        """
        self._check_rate_limits(uploads=0)
        params: dict[str, Any] = {"types[]": "mention", "limit": limit}
        if since_id:
            params["since_id"] = since_id
        found: list[Mention] = []
        newest = since_id
        path = "/api/v1/notifications"
        for _ in range(max_pages):
            try:
                response = self._api.request("GET", path, params=params)
            finally:
                self._note_rate_limit("requests")
            page = _json_or_none(response)
            if not isinstance(page, list) or not page:
                break
            for item in page:
                mention = mention_from_notification(self.id, item)
                if mention is not None:
                    found.append(mention)
                nid = str(item.get("id", ""))
                if nid and (newest is None or _id_after(nid, newest)):
                    newest = nid
            link = response.links.get("next", {}).get("url") if since_id else None
            if not link:
                break
            path, params = str(link), {}
        found.sort(key=lambda m: (m.created_at, m.remote_id))
        return found, newest

    def streaming_available(self) -> bool:
        """Whether the server's streaming API answers ``/api/v1/streaming/health``."""
        try:
            response = self._api.request("GET", "/api/v1/streaming/health")
        except PublishError:
            return False
        return response.text.strip() == "OK"

    def stream_mentions(
        self,
        on_open: Callable[[], object],
        on_mention: Callable[[Mention, str], None],
        stop: threading.Event,
    ) -> None:
        """Follow ``GET /api/v1/streaming/user/notification`` until it drops or ``stop``.

        ``on_open`` runs once the stream is connected (the caller polls then, so
        nothing posted while it was down is missed); ``on_mention`` gets each
        ``event: notification`` of type mention with the notification's id.  Returns
        when the server ends the stream; raises RetryableError when it drops and a
        PermanentError when the server refuses it (streaming off: 404).
        """
        with self._api.stream(
            "GET", "/api/v1/streaming/user/notification", read_timeout=STREAM_SILENCE_SECONDS
        ) as response:
            self._stream = response
            try:
                on_open()
                for event, data in sse_events(response.iter_lines(), stop):
                    if event != "notification":
                        continue
                    item = _json_or_none_bytes(data.encode())
                    mention = mention_from_notification(self.id, item)
                    if mention is not None:
                        on_mention(mention, str(item.get("id", "")))
            finally:
                self._stream = None

    def stop_stream(self) -> None:
        """Close the stream being read (from another thread), so its reader returns."""
        stream = self._stream
        if stream is not None:
            stream.close()

    def account_id(self) -> str:
        """The id of the account the token belongs to (to never answer itself)."""
        account = self._api.json("GET", "/api/v1/accounts/verify_credentials")
        return str(self._api.pick(account, "id"))

    @property
    def _limits_key(self) -> str:
        return f"{self.id}:mastodon:limits"

    def _stored_limits(self) -> InstanceLimits:
        stored = self._store.get(self._limits_key)
        if stored:
            try:
                return InstanceLimits(**json.loads(stored))
            except (TypeError, ValueError):
                log.warning("%s: ignoring unreadable stored limits", self.id)
        return InstanceLimits()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()


def media_files(item: MediaItem) -> list[tuple[str, tuple[str, bytes | Path, str]]]:
    """The multipart files of one upload, streamed from disk: the ``file``, and a
    video's poster frame as its ``thumbnail`` (the still Mastodon shows before the
    video plays)."""
    files: list[tuple[str, tuple[str, bytes | Path, str]]] = [
        ("file", (item.path.name, item.path, item.mime))
    ]
    if item.is_video and item.poster is not None and item.poster.exists():
        files.append(("thumbnail", (item.poster.name, item.poster, "image/jpeg")))
    return files


MASTODON_REGIONAL = frozenset({"zh-CN", "zh-HK", "zh-TW", "zh-YUE"})
"""The only regional languages a status may carry (Mastodon's LanguagesHelper
``ISO_639_1_REGIONAL``); any other tag it cuts to its first subtag itself."""


def mastodon_language(tag: str) -> str:
    """A BCP 47 tag in the form Mastodon's ``language`` takes: an ISO 639 code, or one
    of its Chinese variants (``zh-Hant-TW`` → ``zh-TW``, ``zh-Hans`` → ``zh-CN``,
    ``sr-Latn`` → ``sr``, ``es-419`` → ``es``)."""
    subtags = tag.split("-")
    language = subtags[0].lower()
    if language == "zh":
        rest = [s.upper() for s in subtags[1:]]
        for region in ("TW", "HK", "CN"):
            if region in rest:
                return f"zh-{region}"
        if "YUE" in rest:
            return "zh-YUE"
        if "HANT" in rest:
            return "zh-TW"
        if "HANS" in rest:
            return "zh-CN"
    return language


def _id_after(a: str, b: str) -> bool:
    """Mastodon ids are numeric strings (snowflakes): compare as numbers when they are."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a > b


def mention_from_notification(publisher: str, item: Any) -> Mention | None:
    """A ``mention`` notification as a Mention; ``None`` for anything else or bad shape."""
    if not isinstance(item, dict) or item.get("type") != "mention":
        return None
    status = item.get("status")
    account = item.get("account") or (status or {}).get("account")
    if not isinstance(status, dict) or not isinstance(account, dict) or "id" not in status:
        return None
    try:
        created = datetime.fromisoformat(str(status.get("created_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return Mention(
        publisher=publisher,
        remote_id=str(status["id"]),
        author=str(account.get("acct") or account.get("username") or ""),
        author_name=str(account.get("display_name") or ""),
        author_id=str(account.get("id") or ""),
        text=_html_text(str(status.get("content") or "")),
        created_at=created,
        lang=status.get("language"),
        visibility=status.get("visibility"),
        in_reply_to=status.get("in_reply_to_id"),
        bot=bool(account.get("bot")),
        url=status.get("url") or status.get("uri"),
    )


def sse_events(lines: Iterable[str], stop: threading.Event) -> Iterator[tuple[str, str]]:
    """(event, data) of each server-sent event; comments (heartbeats) skipped.

    An event whose data grows past MAX_EVENT_CHARS is dropped whole.
    """
    event, size = "message", 0
    data: list[str] = []
    for line in lines:
        if stop.is_set():
            return
        if not line:
            if data and size <= MAX_EVENT_CHARS:
                yield event, "\n".join(data)
            event, data, size = "message", [], 0
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                size += len(value)
                if size <= MAX_EVENT_CHARS:
                    data.append(value)


def _html_text(html: str) -> str:
    """The text of a status's HTML ``content`` (paragraphs and line breaks kept)."""
    import html as html_module
    import re

    text = re.sub(r"<br\s*/?>", "\n", html)
    text = re.sub(r"</p>\s*<p>", "\n\n", text)
    return html_module.unescape(re.sub(r"<[^>]*>", "", text))


def _plain(text: str) -> str:
    """Text compared without regard to whitespace."""
    return " ".join(text.split())


def _json_or_none_bytes(raw: bytes) -> Any:
    from gateway.publishers.http import loads_bounded

    try:
        return loads_bounded(raw)
    except ValueError:
        return None


def _json_or_none(response: Any) -> Any:
    from gateway.publishers.http import loads_bounded

    try:
        return loads_bounded(response.content)
    except ValueError:
        return None


__all__ = ["InstanceLimits", "MastodonConfig", "MastodonPublisher", "build", "mastodon_language"]
