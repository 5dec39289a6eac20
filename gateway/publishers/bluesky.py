"""The ``bluesky`` publisher: AT Protocol, for bsky.social or a self-hosted PDS.

Steps of one post:

1. A session: ``com.atproto.server.createSession`` the first time only; the tokens are
   kept in the gateway's store, and a later process renews them with
   ``com.atproto.server.refreshSession`` (logging in for every post runs into the
   service's tight login limits).  An ``ExpiredToken`` answer renews the session and
   repeats the call once.  A login the PDS refuses (a revoked app password) pauses
   the publisher (``PublisherPausedError``) until a reload brings a new one.
2. ``com.atproto.repo.uploadBlob`` per image (raw bytes); a video (MP4) is a blob
   through the PDS too, embedded as ``app.bsky.embed.video`` (alt text,
   ``aspectRatio``; a post has one video and then no images).
3. ``com.atproto.repo.createRecord`` of an ``app.bsky.feed.post`` with ``langs``,
   mention, link and hashtag facets detected as the official client does
   (``facets.py``; UTF-8 byte offsets; a mention's handle resolved to its DID with
   ``com.atproto.identity.resolveHandle``, cached for an hour) and an
   ``app.bsky.embed.images`` embed (alt text, ``aspectRatio``).  The record key is a
   TID derived from the post id, so a retried create cannot make a second post: when
   a create fails, the record is looked up with ``com.atproto.repo.getRecord`` and,
   if it is there, that is the receipt.

A thread (``publish_thread``) creates one record per part; each later part carries
``reply: {root, parent}`` (the first part's and the previous part's ``{uri, cid}``)
and the key ``record_key(post id, n)``, so a retried part cannot be created twice
either.  Each part's ``{uri, cid}`` is recorded in the store once created, so a retry
after a crash continues the thread.

Conversations (``read_mentions``): ``app.bsky.notification.listNotifications``
(reasons ``mention`` and ``reply``) through the PDS's service proxy (header
``atproto-proxy: did:web:api.bsky.app#bsky_appview``), newest first, paged back with
its ``cursor`` until the stored cursor (the newest ``indexedAt`` read).  The stored
cursor is the poller's to save, after the mentions are stored; the next read then
tells the service with ``app.bsky.notification.updateSeen`` (so "seen" never runs
ahead of what is stored).  A 429 is respected: no read before its reset.  An answer
is a real reply: ``reply: {root, parent}`` strong refs (the parent's ``cid`` and its
own root from ``app.bsky.feed.getPosts``), the asker mentioned by a facet with their
DID.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.config.publishers import BlueskyConfig
from gateway.model import (
    MediaItem,
    Mention,
    PermanentError,
    Post,
    PublisherPausedError,
    PublishError,
    Receipt,
    VideoLimits,
)
from gateway.publishers.base import Capabilities, KeyValueStore, PublisherContext
from gateway.publishers.facets import detect_facets, resolve_mentions
from gateway.publishers.http import ReadHold, ServiceError
from gateway.publishers.threads import PostedPart, ThreadLog, post_parts

if TYPE_CHECKING:
    from gateway.publishers.http import ApiClient

log = logging.getLogger(__name__)

T = TypeVar("T")
POST_COLLECTION = "app.bsky.feed.post"
RENEW_ERRORS = frozenset({"ExpiredToken", "InvalidToken"})
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
BLUESKY_VIDEO = VideoLimits(
    alone=True,  # one video, or images
    # app.bsky.embed.video lexicon: the video blob's maxSize is 100000000 bytes, MP4;
    # Bluesky's announcement of 2025-03-12: videos up to 3 minutes, 100 MB.
    max_bytes=100_000_000,
    max_duration=180.0,
)
APPVIEW_PROXY = "did:web:api.bsky.app#bsky_appview"
"""The ``atproto-proxy`` header value: the PDS forwards app.bsky.* reads to the AppView."""
MENTION_REASONS = ("mention", "reply")
HANDLE_CACHE_SECONDS = 3600.0
"""How long a handle's DID (or that it has none) is kept before asking the PDS again."""


def build(config: BlueskyConfig, ctx: PublisherContext) -> BlueskyPublisher:
    """Create the publisher a ``bluesky`` config entry describes."""
    from gateway.publishers.http import ApiClient

    api = ApiClient(
        "bluesky", config.service.rstrip("/"), timeout=config.timeout, secrets=[config.app_password]
    )
    return BlueskyPublisher(config, api, ctx.store)


@dataclass(frozen=True, slots=True)
class Session:
    """An AT Protocol session: what createSession/refreshSession return."""

    did: str
    handle: str
    access_jwt: str
    refresh_jwt: str

    def __repr__(self) -> str:
        return f"Session(did={self.did!r}, handle={self.handle!r})"


class BlueskyPublisher:
    """Keeps one session in the store and posts records with a key derived from the post."""

    capabilities = Capabilities(
        text_counting="graphemes",
        max_text=300,
        max_text_bytes=3000,
        max_images=4,
        max_image_bytes=1_000_000,
        max_alt_text=2000,
        supports_language=True,
        video=BLUESKY_VIDEO,
    )

    def __init__(self, config: BlueskyConfig, api: ApiClient, store: KeyValueStore) -> None:
        self.id = config.id
        self._config = config
        self._api = api
        self._store = store
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._handles: dict[str, tuple[str | None, float]] = {}
        self._clock = time.monotonic
        self.mentions_hold = ReadHold("bluesky: notifications")
        self._seen_sent: str | None = None

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        """Upload the images and create the post record; raise Retryable/PermanentError."""
        media = one_embed(media)
        blobs = [self._authed(functools.partial(self._upload_blob, item=item)) for item in media]
        record = post_record(post, text, media, blobs, self._resolver(post))
        reply = self._reply_refs(post)
        if reply is not None:
            record["reply"] = reply
        rkey = record_key(post.id)
        return self._authed(lambda token: self._create_record(token, rkey, record)).receipt

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Create one record per part, each replying to the previous; skip parts already out."""

        reply = self._reply_refs(post)

        def post_part(n: int, text: str, earlier: list[PostedPart]) -> PostedPart:
            part_media = one_embed(media) if n == 1 else ()
            blobs = [
                self._authed(functools.partial(self._upload_blob, item=item)) for item in part_media
            ]
            record = post_record(post, text, part_media, blobs, self._resolver(post))
            if earlier:
                record["reply"] = {
                    "root": (reply or {}).get("root") or _strong_ref(earlier[0]),
                    "parent": _strong_ref(earlier[-1]),
                }
            elif reply is not None:
                record["reply"] = reply
            rkey = record_key(post.id, n)
            return self._authed(lambda token: self._create_record(token, rkey, record))

        return post_parts(parts, ThreadLog(self._store, self.id, post.id), post_part)

    # -- session -------------------------------------------------------------

    def _authed(self, call: Callable[[str], T]) -> T:
        """Run ``call(access_jwt)``; on an expired token, renew the session and retry once."""
        session = self._current_session()
        try:
            return call(session.access_jwt)
        except ServiceError as exc:
            if exc.code not in RENEW_ERRORS:
                raise
        return call(self._renew(session).access_jwt)

    def _current_session(self) -> Session:
        with self._lock:
            if self._session is None:
                stored = self._stored_session()
                self._session = self._renew_locked(stored) if stored else self._create_session()
            return self._session

    def _renew(self, stale: Session) -> Session:
        with self._lock:
            if self._session is not None and self._session != stale:
                return self._session  # another thread already renewed it
            self._session = self._renew_locked(stale)
            return self._session

    def _renew_locked(self, stale: Session) -> Session:
        try:
            answer = self._api.json(
                "POST",
                "/xrpc/com.atproto.server.refreshSession",
                headers={"Authorization": f"Bearer {stale.refresh_jwt}"},
            )
        except ServiceError as exc:
            # The refresh token expired or was revoked: logging in again is the only way.
            log.info("%s: refreshing the session failed (%s); logging in", self.id, exc.code)
            return self._create_session()
        return self._save(self._session_from(answer))

    def _create_session(self) -> Session:
        try:
            answer = self._api.json(
                "POST",
                "/xrpc/com.atproto.server.createSession",
                json={
                    "identifier": self._config.handle,
                    "password": self._config.app_password.get_secret_value(),
                },
            )
        except ServiceError as exc:
            if exc.status == 401 or exc.code in ("AuthenticationRequired", "AccountTakedown"):
                # A revoked app password: every post would fail the same way until the
                # config has a new one, so the publisher pauses (until a reload).
                raise PublisherPausedError(
                    f"bluesky: the PDS refused the login: {exc.detail}"
                ) from None
            raise
        return self._save(self._session_from(answer))

    def _session_from(self, answer: dict[str, Any]) -> Session:
        did, handle, access, refresh = (
            self._api.pick(answer, key) for key in ("did", "handle", "accessJwt", "refreshJwt")
        )
        return Session(did, handle, access, refresh)

    @property
    def _session_key(self) -> str:
        return f"{self.id}:bluesky:session"

    def _stored_session(self) -> Session | None:
        stored = self._store.get(self._session_key)
        try:
            return Session(**json.loads(stored)) if stored else None
        except (TypeError, ValueError):
            return None

    def _save(self, session: Session) -> Session:
        fields = {
            "did": session.did,
            "handle": session.handle,
            "access_jwt": session.access_jwt,
            "refresh_jwt": session.refresh_jwt,
        }
        self._store.set(self._session_key, json.dumps(fields))
        return session

    # -- conversations -------------------------------------------------------

    def read_mentions(
        self, since_id: str | None, limit: int = 50, max_pages: int = 5
    ) -> tuple[list[Mention], str | None]:
        """Mentions and replies indexed after ``since_id``, oldest first, and the newest
        ``indexedAt`` read (the next cursor).

        ``since_id`` is the cursor the poller stored with the mentions it covers, so
        ``updateSeen`` up to it is sent first.  Without a cursor one page is read.
        """

        def read() -> tuple[list[Mention], str | None]:
            if since_id and since_id != self._seen_sent:
                self._authed(functools.partial(self._update_seen, seen_at=since_id))
                self._seen_sent = since_id
            return self._read_notifications(since_id, limit, max_pages)

        return self.mentions_hold.run(read)

    def _read_notifications(
        self, since: str | None, limit: int, max_pages: int
    ) -> tuple[list[Mention], str | None]:
        found: list[Mention] = []
        newest = since
        cursor: str | None = None
        for _ in range(max_pages):
            params: dict[str, Any] = {"limit": limit, "reasons": list(MENTION_REASONS)}
            if cursor:
                params["cursor"] = cursor
            page = self._authed(functools.partial(self._appview_get, path=_LIST, params=params))
            items = page.get("notifications")
            if not isinstance(items, list):
                break
            older = False
            for item in items:
                indexed = item.get("indexedAt") if isinstance(item, dict) else None
                if not isinstance(indexed, str):
                    continue
                if since is not None and _instant(indexed) < _instant(since):
                    older = True
                    continue
                if newest is None or _instant(indexed) > _instant(newest):
                    newest = indexed
                mention = mention_from_notification(self.id, item, self._config.app_url)
                if mention is not None:
                    found.append(mention)
            cursor = page.get("cursor") if isinstance(page.get("cursor"), str) else None
            if older or not cursor or since is None or not items:
                break
        found.sort(key=lambda m: (m.created_at, m.remote_id))
        return found, newest

    def _appview_get(self, token: str, *, path: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._api.json(
            "GET",
            path,
            params=params,
            headers={"Authorization": f"Bearer {token}", "atproto-proxy": APPVIEW_PROXY},
        )

    def _update_seen(self, token: str, *, seen_at: str) -> None:
        self._api.request(
            "POST",
            "/xrpc/app.bsky.notification.updateSeen",
            json={"seenAt": seen_at},
            headers={"Authorization": f"Bearer {token}", "atproto-proxy": APPVIEW_PROXY},
        )

    def account_id(self) -> str:
        """The DID of the gateway's account (so it never answers itself)."""
        return self._current_session().did

    def _resolver(self, post: Post) -> Callable[[str], str | None]:
        """Handle to DID; the asker of a reply is known by DID already."""
        target = post.reply
        if target is None or target.publisher != self.id or not target.author_id:
            return self._resolve_handle
        asker, did = target.author.lower(), target.author_id

        def resolve(handle: str) -> str | None:
            return did if handle.lower() == asker else self._resolve_handle(handle)

        return resolve

    def _reply_refs(self, post: Post) -> dict[str, Any] | None:
        """``{root, parent}`` strong refs when ``post`` answers a mention on this account.

        The parent's ``cid`` and its own ``reply.root`` come from ``app.bsky.feed.getPosts``;
        a parent that is gone (deleted) is a PermanentError: nothing to reply to.
        """
        target = post.reply
        if target is None or target.publisher != self.id:
            return None
        answer = self._authed(
            functools.partial(
                self._appview_get,
                path="/xrpc/app.bsky.feed.getPosts",
                params={"uris": [target.remote_id]},
            )
        )
        posts = answer.get("posts")
        found = next(
            (p for p in posts or [] if isinstance(p, dict) and p.get("uri") == target.remote_id),
            None,
        )
        if found is None or not isinstance(found.get("cid"), str):
            raise PermanentError(f"bluesky: the post to answer is gone: {target.remote_id}")
        parent = {"uri": found["uri"], "cid": found["cid"]}
        root = ((found.get("record") or {}).get("reply") or {}).get("root")
        if not (isinstance(root, dict) and isinstance(root.get("uri"), str) and root.get("cid")):
            root = parent
        return {"root": {"uri": root["uri"], "cid": root["cid"]}, "parent": parent}

    # -- mentions -------------------------------------------------------------

    def _resolve_handle(self, handle: str) -> str | None:
        """The DID of ``handle`` (``com.atproto.identity.resolveHandle``), cached a while.

        A handle the PDS cannot resolve (4xx) is None: the mention stays plain text.
        A PDS that cannot answer now raises RetryableError: the post waits for it.
        """
        now = self._clock()
        cached = self._handles.get(handle)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            answer = self._api.json(
                "GET", "/xrpc/com.atproto.identity.resolveHandle", params={"handle": handle}
            )
        except ServiceError as exc:
            log.info("%s: @%s stays plain text (%s)", self.id, handle, exc.code or exc.status)
            did = None
        else:
            found = answer.get("did")
            did = found if isinstance(found, str) and found.startswith("did:") else None
        self._handles[handle] = (did, now + HANDLE_CACHE_SECONDS)
        return did

    # -- repository calls ----------------------------------------------------

    def _upload_blob(self, token: str, *, item: MediaItem) -> dict[str, Any]:
        from gateway.publishers.http import file_chunks

        # streamed from disk with its length (a video is up to 100 MB): the PDS
        # wants Content-Length, not a chunked body
        answer = self._api.json(
            "POST",
            "/xrpc/com.atproto.repo.uploadBlob",
            content=file_chunks(item.path),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": item.mime,
                "Content-Length": str(item.path.stat().st_size),
            },
        )
        blob: dict[str, Any] = self._api.pick(answer, "blob")
        return blob

    def _create_record(self, token: str, rkey: str, record: dict[str, Any]) -> PostedPart:
        did = self._current_session().did
        body = {"repo": did, "collection": POST_COLLECTION, "rkey": rkey, "record": record}
        try:
            answer = self._api.json(
                "POST",
                "/xrpc/com.atproto.repo.createRecord",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        except ServiceError as exc:
            if exc.code in RENEW_ERRORS:
                raise
            return self._existing_record(did, rkey, exc)
        except PublishError as exc:
            return self._existing_record(did, rkey, exc)
        return self._posted(did, rkey, answer)

    def _existing_record(self, did: str, rkey: str, failure: PublishError) -> PostedPart:
        """The receipt of a record an earlier attempt created, else re-raise ``failure``."""
        try:
            found = self._api.json(
                "GET",
                "/xrpc/com.atproto.repo.getRecord",
                params={"repo": did, "collection": POST_COLLECTION, "rkey": rkey},
            )
        except PublishError:
            raise failure from None
        log.info("%s: record %s already existed; treating it as sent", self.id, rkey)
        return self._posted(did, rkey, found)

    def _posted(self, did: str, rkey: str, answer: dict[str, Any]) -> PostedPart:
        cid = answer.get("cid")
        return PostedPart(
            remote_id=str(self._api.pick(answer, "uri")),
            url=f"{self._config.app_url.rstrip('/')}/profile/{did}/post/{rkey}",
            cid=cid if isinstance(cid, str) else None,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()


def post_record(
    post: Post,
    text: str,
    media: tuple[MediaItem, ...],
    blobs: list[dict[str, Any]],
    resolve: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """The ``app.bsky.feed.post`` record for one post."""
    created = post.created_at.astimezone(UTC).isoformat(timespec="milliseconds")
    record: dict[str, Any] = {
        "$type": POST_COLLECTION,
        "text": text,
        "createdAt": created.replace("+00:00", "Z"),
    }
    if post.lang:
        record["langs"] = [post.lang]
    facets = text_facets(text, resolve)
    if facets:
        record["facets"] = facets
    video = next((pair for pair in zip(media, blobs, strict=True) if pair[0].is_video), None)
    if video is not None:
        record["embed"] = video_embed(*video)
    elif blobs:
        record["embed"] = {
            "$type": "app.bsky.embed.images",
            "images": [
                {
                    "alt": item.alt,
                    "image": blob,
                    "aspectRatio": {"width": item.width, "height": item.height},
                }
                for item, blob in zip(media, blobs, strict=True)
            ],
        }
    return record


def one_embed(media: tuple[MediaItem, ...]) -> tuple[MediaItem, ...]:
    """What one post can carry: its first video alone (a post has one embed: a video
    or images), else the images."""
    videos = [item for item in media if item.is_video]
    if videos and len(media) > 1:
        log.info("bluesky: a post takes one video and no images; %d left out", len(media) - 1)
    return (videos[0],) if videos else media


def video_embed(item: MediaItem, blob: dict[str, Any]) -> dict[str, Any]:
    """An ``app.bsky.embed.video`` of an uploaded MP4 blob, with its alt text and
    ``aspectRatio`` (the app sizes the player from it before the video loads)."""
    embed: dict[str, Any] = {
        "$type": "app.bsky.embed.video",
        "video": blob,
        "aspectRatio": {"width": item.width, "height": item.height},
    }
    if item.alt:
        embed["alt"] = item.alt
    return embed


def text_facets(
    text: str, resolve: Callable[[str], str | None] | None = None
) -> list[dict[str, Any]]:
    """Mention, link and hashtag facets as the official client detects them (UTF-8 ranges).

    ``resolve`` turns a handle into its DID; a mention it cannot resolve (or every
    mention, without it) stays plain text.
    """
    return resolve_mentions(detect_facets(text), resolve or (lambda _handle: None))


_LIST = "/xrpc/app.bsky.notification.listNotifications"


def _instant(stamp: str) -> datetime:
    """An AT Protocol datetime (RFC 3339, ``Z`` or offset) as an aware datetime."""
    try:
        value = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def mention_from_notification(publisher: str, item: Any, app_url: str) -> Mention | None:
    """A ``mention``/``reply`` notification as a Mention; ``None`` for anything else."""
    if not isinstance(item, dict) or item.get("reason") not in MENTION_REASONS:
        return None
    author, record, uri = item.get("author"), item.get("record"), item.get("uri")
    if not isinstance(author, dict) or not isinstance(record, dict) or not isinstance(uri, str):
        return None
    did, handle = author.get("did"), author.get("handle")
    if not isinstance(did, str) or not isinstance(handle, str):
        return None
    labels = author.get("labels") or []
    bot = any(isinstance(lb, dict) and lb.get("val") == "bot" for lb in labels)
    langs = record.get("langs")
    found = record.get("reply")
    reply: dict[str, Any] = found if isinstance(found, dict) else {}
    created = record.get("createdAt") or item.get("indexedAt") or ""
    return Mention(
        publisher=publisher,
        remote_id=uri,
        author=handle,
        author_name=str(author.get("displayName") or ""),
        author_id=did,
        text=str(record.get("text") or ""),
        created_at=_instant(str(created)),
        lang=langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None,
        in_reply_to=(reply.get("parent") or {}).get("uri"),
        root_id=str((reply.get("root") or {}).get("uri") or ""),
        bot=bot,
        url=f"{app_url.rstrip('/')}/profile/{handle}/post/{uri.rsplit('/', 1)[-1]}",
    )


def _strong_ref(part: PostedPart) -> dict[str, Any]:
    """A ``com.atproto.repo.strongRef`` to a posted record."""
    if part.remote_id is None or part.cid is None:
        raise PermanentError(f"bluesky: no uri/cid recorded for {part.url}; cannot reply to it")
    return {"uri": part.remote_id, "cid": part.cid}


def record_key(post_id: str, part: int = 1) -> str:
    """A TID record key derived from the post id: the same post always gets the same key.

    Part ``n`` of a thread gets the key of part 1 plus ``n - 1`` microseconds, so the
    parts sort in order and a retried part gets the same key again.

    A ULID's 48-bit millisecond time becomes the TID's microseconds (plus three digits
    of the ULID's randomness) and ten more random bits become its clock id, so keys
    sort like the posts and stay valid for collections that require TIDs.  Ids that
    are not ULIDs are hashed instead.
    """
    try:
        number = 0
        for char in post_id.upper():
            number = number * 32 + _CROCKFORD.index(char)
        if len(post_id) != 26:
            raise ValueError(post_id)
        millis, random = number >> 80, number & ((1 << 80) - 1)
        micros = millis * 1000 + (random >> 70) % 1000
        value = (micros << 10) | (random & 0x3FF)
    except ValueError:
        value = int.from_bytes(hashlib.sha256(post_id.encode()).digest()[:8], "big")
    value += (part - 1) << 10  # the microseconds sit above the 10-bit clock id
    value &= (1 << 63) - 1  # a TID's top bit is always 0
    return "".join(_BASE32_SORTABLE[(value >> (5 * i)) & 31] for i in reversed(range(13)))


__all__ = ["BlueskyConfig", "BlueskyPublisher", "build", "post_record", "record_key", "text_facets"]
