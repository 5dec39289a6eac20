"""A fake AT Protocol PDS: sessions, blobs and post records.

Shapes follow the com.atproto lexicons: createSession → ``{accessJwt, refreshJwt,
handle, did}``; refreshSession with the refresh token as bearer (the old refresh
token stops working); an expired access token → 400 ``ExpiredToken``; uploadBlob →
``{blob}``; createRecord (an ``app.bsky.embed.video`` must embed an uploaded
``video/mp4`` blob with an ``aspectRatio``) → ``{uri, cid}``, and a second create at
the same rkey → 500,
as today's PDS answers; getRecord → ``{uri, cid, value}`` or 400 ``RecordNotFound``; resolveHandle →
``{did}`` or 400 ``InvalidRequest`` "Unable to resolve handle".

Conversations, as the PDS proxies them to the AppView (only with the header
``atproto-proxy: did:web:api.bsky.app#bsky_appview``; without it → 400
``MethodNotImplemented``): app.bsky.notification.listNotifications (newest first,
``limit``, ``reasons``, an opaque ``cursor`` to older pages, each item ``{uri, cid,
author: {did, handle, displayName, labels}, reason, record, isRead, indexedAt}``),
app.bsky.notification.updateSeen ``{seenAt}`` and app.bsky.feed.getPosts (``uris``
→ ``{posts: [{uri, cid, author, record, indexedAt}]}``).  :meth:`FakePds.mention`
makes another account post a mention (or a reply) the gateway's account will read.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply, Route

RKEY = re.compile(r"^[A-Za-z0-9._:~-]{1,512}$")
APPVIEW = "did:web:api.bsky.app#bsky_appview"


class FakePds(FakeServer):
    """A PDS hosting one account."""

    service = "bluesky"

    def __init__(self, handle: str = "poolcam.test", password: str = "app-pass-1234") -> None:
        self.handle = handle
        self.password = password
        self.did = "did:plc:fakepoolcam000000000000"
        self.access: set[str] = set()
        self.refresh: set[str] = set()
        self.blobs: dict[str, tuple[str, bytes]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.handles: dict[str, str] = {handle: self.did}
        """Handles com.atproto.identity.resolveHandle knows, with their DIDs."""
        self.notifications: list[dict[str, Any]] = []
        """Newest last; listNotifications answers newest first."""
        self.seen_at: list[str] = []
        self._clock = datetime.now(UTC) - timedelta(hours=1)
        super().__init__()

    def routes(self) -> list[tuple[str, str, Route]]:
        """The endpoints this fake serves."""
        x = "/xrpc/com.atproto."
        return [
            ("POST", x + r"server\.createSession", self._create_session),
            ("POST", x + r"server\.refreshSession", self._refresh_session),
            ("POST", x + r"repo\.uploadBlob", self._upload_blob),
            ("POST", x + r"repo\.createRecord", self._create_record),
            ("GET", x + r"repo\.getRecord", self._get_record),
            ("GET", x + r"identity\.resolveHandle", self._resolve_handle),
            ("GET", r"/xrpc/app\.bsky\.notification\.listNotifications", self._list),
            ("POST", r"/xrpc/app\.bsky\.notification\.updateSeen", self._update_seen),
            ("GET", r"/xrpc/app\.bsky\.feed\.getPosts", self._get_posts),
        ]

    # -- conversations -------------------------------------------------------

    def _tick(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def mention(
        self,
        handle: str,
        text: str,
        *,
        reason: str = "mention",
        bot: bool = False,
        reply_to: str | None = None,
        langs: tuple[str, ...] = ("en",),
        display_name: str = "",
    ) -> dict[str, Any]:
        """``handle`` posts ``text`` (replying to the record ``reply_to``, if given);
        the gateway's account gets a notification.  Returns the post's record view."""
        did = self.handles.setdefault(
            handle, f"did:plc:{hashlib.sha256(handle.encode()).hexdigest()[:24]}"
        )
        now = self._tick()
        rkey = f"3l{secrets.token_hex(6)}"
        uri = f"at://{did}/app.bsky.feed.post/{rkey}"
        record: dict[str, Any] = {
            "$type": "app.bsky.feed.post",
            "text": text,
            "createdAt": now,
            "langs": list(langs),
        }
        if reply_to is not None:
            parent = self.records[reply_to]
            root = (parent["value"].get("reply") or {}).get("root") or {
                "uri": parent["uri"],
                "cid": parent["cid"],
            }
            record["reply"] = {"root": root, "parent": {"uri": parent["uri"], "cid": parent["cid"]}}
        cid = "bafyrei" + hashlib.sha256(uri.encode()).hexdigest()[:52]
        self.records[uri] = {"uri": uri, "cid": cid, "value": record}
        labels = (
            [
                {
                    "src": did,
                    "uri": f"at://{did}/app.bsky.actor.profile/self",
                    "val": "bot",
                    "cts": now,
                }
            ]
            if bot
            else []
        )
        author = {
            "did": did,
            "handle": handle,
            "displayName": display_name or handle.split(".")[0].title(),
            "labels": labels,
        }
        self.notifications.append(
            {
                "uri": uri,
                "cid": cid,
                "author": author,
                "reason": reason,
                "record": record,
                "isRead": False,
                "indexedAt": now,
                "labels": [],
            }
        )
        return self.records[uri]

    def _proxied(self, request: Recorded) -> Reply | None:
        if denied := self._check_access(request):
            return denied
        if request.header("atproto-proxy") != APPVIEW:
            return Reply(
                400, {"error": "MethodNotImplemented", "message": "Method Not Implemented"}
            )
        return None

    def _list(self, request: Recorded, match: re.Match[str]) -> Reply:
        if denied := self._proxied(request):
            return denied
        limit = int(request.query.get("limit", ["50"])[0])
        if not 1 <= limit <= 100:
            return Reply(400, {"error": "InvalidRequest", "message": "limit out of range"})
        reasons = request.query.get("reasons")
        items = [n for n in reversed(self.notifications) if not reasons or n["reason"] in reasons]
        cursor = request.query.get("cursor", [None])[0]
        if cursor is not None:
            items = [n for n in items if n["indexedAt"] < cursor]
        page = items[:limit]
        body: dict[str, Any] = {"notifications": page, "priority": False}
        if len(items) > limit:
            body["cursor"] = page[-1]["indexedAt"]
        return Reply(200, body)

    def _update_seen(self, request: Recorded, match: re.Match[str]) -> Reply:
        if denied := self._proxied(request):
            return denied
        self.seen_at.append(request.json()["seenAt"])
        return Reply(200)

    def _get_posts(self, request: Recorded, match: re.Match[str]) -> Reply:
        if denied := self._proxied(request):
            return denied
        posts = []
        for uri in request.query.get("uris", []):
            if uri in self.records:
                r = self.records[uri]
                did = uri.split("/")[2]
                handle = next((h for h, d in self.handles.items() if d == did), "handle.invalid")
                posts.append(
                    {
                        "uri": uri,
                        "cid": r["cid"],
                        "record": r["value"],
                        "author": {"did": did, "handle": handle},
                        "indexedAt": self._tick(),
                    }
                )
        return Reply(200, {"posts": posts})

    def revoke_app_password(self, new_password: str) -> None:
        """Revoke the app password (and with it every session) and create a new one."""
        self.password = new_password
        self.access.clear()
        self.refresh.clear()

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired."""
        self.access.clear()

    def _session(self) -> dict[str, str]:
        access, refresh = f"acc-{secrets.token_hex(8)}", f"ref-{secrets.token_hex(8)}"
        self.access.add(access)
        self.refresh.add(refresh)
        return {"accessJwt": access, "refreshJwt": refresh, "handle": self.handle, "did": self.did}

    def _bearer(self, request: Recorded) -> str:
        return (request.header("authorization") or "").removeprefix("Bearer ")

    def _check_access(self, request: Recorded) -> Reply | None:
        token = self._bearer(request)
        if token in self.access:
            return None
        if token.startswith("acc-"):
            return Reply(400, {"error": "ExpiredToken", "message": "Token has expired"})
        return Reply(401, {"error": "AuthenticationRequired", "message": "Invalid token"})

    def _create_session(self, request: Recorded, match: re.Match[str]) -> Reply:
        body = request.json()
        if body.get("identifier") != self.handle or body.get("password") != self.password:
            return Reply(
                401,
                {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
            )
        return Reply(200, self._session())

    def _refresh_session(self, request: Recorded, match: re.Match[str]) -> Reply:
        token = self._bearer(request)
        if token not in self.refresh:
            return Reply(400, {"error": "ExpiredToken", "message": "Token has been revoked"})
        self.refresh.discard(token)
        return Reply(200, self._session())

    def _upload_blob(self, request: Recorded, match: re.Match[str]) -> Reply:
        if denied := self._check_access(request):
            return denied
        mime = request.header("content-type") or "*/*"
        cid = "bafkrei" + hashlib.sha256(request.body).hexdigest()[:52]
        self.blobs[cid] = (mime, request.body)
        return Reply(
            200,
            {
                "blob": {
                    "$type": "blob",
                    "ref": {"$link": cid},
                    "mimeType": mime,
                    "size": len(request.body),
                }
            },
        )

    def _create_record(self, request: Recorded, match: re.Match[str]) -> Reply:
        if denied := self._check_access(request):
            return denied
        body = request.json()
        rkey = body.get("rkey") or secrets.token_hex(6)
        if body.get("repo") not in (self.did, self.handle) or not RKEY.match(rkey):
            return Reply(400, {"error": "InvalidRequest", "message": "bad repo or rkey"})
        uri = f"at://{self.did}/{body['collection']}/{rkey}"
        if uri in self.records:
            return Reply(500, {"error": "InternalServerError", "message": "Internal Server Error"})
        embed = body["record"].get("embed") or {}
        if embed.get("$type") == "app.bsky.embed.video" and (problem := self._bad_video(embed)):
            return Reply(400, {"error": "InvalidRequest", "message": problem})
        cid = "bafyrei" + hashlib.sha256(request.body).hexdigest()[:52]
        self.records[uri] = {"uri": uri, "cid": cid, "value": body["record"]}
        return Reply(200, {"uri": uri, "cid": cid, "validationStatus": "valid"})

    def _bad_video(self, embed: dict[str, Any]) -> str | None:
        """What the app.bsky.embed.video lexicon refuses: a blob that is not an
        uploaded MP4 (maxSize 100000000), an aspectRatio without positive sides."""
        blob = embed.get("video") or {}
        link = (blob.get("ref") or {}).get("$link")
        if link not in self.blobs or blob.get("mimeType") != "video/mp4":
            return "embed.video: not an uploaded video/mp4 blob"
        if blob.get("size", 0) > 100_000_000:
            return "embed.video: blob too large"
        ratio = embed.get("aspectRatio") or {}
        if not (ratio.get("width", 0) >= 1 and ratio.get("height", 0) >= 1):
            return "embed.video: bad aspectRatio"
        return None

    def _get_record(self, request: Recorded, match: re.Match[str]) -> Reply:
        q = {k: v[0] for k, v in request.query.items()}
        uri = f"at://{self.did}/{q.get('collection')}/{q.get('rkey')}"
        if uri not in self.records:
            message = f"Could not locate record: {uri}"
            return Reply(400, {"error": "RecordNotFound", "message": message})
        return Reply(200, self.records[uri])

    def _resolve_handle(self, request: Recorded, match: re.Match[str]) -> Reply:
        handle = request.query.get("handle", [""])[0]
        if handle not in self.handles:
            # what a PDS answers for a handle it cannot resolve
            return Reply(400, {"error": "InvalidRequest", "message": "Unable to resolve handle"})
        return Reply(200, {"did": self.handles[handle]})
