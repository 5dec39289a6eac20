"""A Mastodon server's mentions side on 127.0.0.1: notifications polled and streamed.

Speaks what the gateway reads and writes for conversations, in Mastodon's shapes:
``GET /api/v1/notifications?types[]=mention`` (``since_id``, newest first),
``GET /api/v1/streaming/health`` (``OK``), ``GET /api/v1/streaming/user/notification``
(server-sent events: a ``:)`` comment when connected, ``event: notification`` /
``data: {...}`` per notification, ``:thump`` heartbeats), ``verify_credentials``,
``POST /api/v1/statuses`` (the replies, recorded with the time they arrived).
``streaming=False`` answers 404 on the streaming routes, like a server without it;
``refuse_stream`` only on the stream itself (its health still says OK).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

GATEWAY_ID = "1"


def answering_toml(base_url: str, token: str, *, streaming: bool, poll_interval: str) -> str:
    """``[conversations]``, one ``[[replies]]`` (to "warm") and one Mastodon publisher
    (``masto``): every mention answered, the caps out of the way."""
    return f"""
[conversations]
enabled = true
poll_interval = "{poll_interval}"
streaming = {"true" if streaming else "false"}
cooldown = "0s"
per_asker_hourly = 100000
global_hourly = 100000

[[replies]]
id = "temp"
match = ["warm"]
text = "Warm? Water is 24.5 °C, {{{{ asker }}}}."

[[publishers]]
id = "masto"
type = "mastodon"
base_url = "{base_url}"
access_token = "{token}"
visibility = "public"
timeout = 5
"""


@dataclass
class Posted:
    """A status the gateway created."""

    id: str
    in_reply_to_id: str | None
    visibility: str | None
    status: str
    at: float


class MentionsFake:
    """Mentions of the gateway's account (``@pool``), polled or streamed."""

    def __init__(self, *, streaming: bool = True, heartbeat: float = 1.0) -> None:
        self.streaming = streaming
        self.heartbeat = heartbeat
        self.refuse_stream = False
        """Health says OK but the stream answers 404 (mastodon-mock with streaming off)."""
        self.requests: dict[str, int] = {}
        self.request_times: dict[str, list[float]] = {}
        """``"GET /path"`` → when each request came (``time.monotonic()``)."""
        self.posted: list[Posted] = []
        self.stream_connects = 0
        self._notifications: list[dict[str, Any]] = []
        self._next_id = 100
        self._lock = threading.Lock()
        self._posted_cond = threading.Condition(self._lock)
        self._streams: list[queue.Queue[bytes | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._get(self)

            def do_POST(self) -> None:
                fake._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_streams()
        self._server.shutdown()
        self._server.server_close()

    # --- what the test does -------------------------------------------------

    def mention(
        self,
        text: str = "@pool how warm is it?",
        *,
        author: str = "bob",
        visibility: str = "public",
        bot: bool = False,
        stream: bool = True,
        kind: str = "mention",
    ) -> str:
        """A status of ``author`` mentioning the gateway; returns the status id."""
        with self._lock:
            self._next_id += 1
            sid = str(self._next_id)
            self._next_id += 1
            nid = str(self._next_id)
            account = {
                "id": f"acct-{author}",
                "username": author,
                "acct": author,
                "display_name": author.title(),
                "bot": bot,
            }
            item = {
                "id": nid,
                "type": kind,
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "account": account,
                "status": {
                    "id": sid,
                    "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "content": f"<p>{text}</p>",
                    "visibility": visibility,
                    "language": "en",
                    "in_reply_to_id": None,
                    "url": f"https://fake.example/@{author}/{sid}",
                    "account": account,
                },
            }
            self._notifications.append(item)
            if stream:
                event = f"event: notification\ndata: {json.dumps(item)}\n\n".encode()
                for q in self._streams:
                    q.put(event)
        return sid

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes to every open stream (other events, bad data)."""
        with self._lock:
            for q in self._streams:
                q.put(data)

    def drop_streams(self) -> None:
        """End every open stream (the server restarts, a proxy times out)."""
        with self._lock:
            for q in self._streams:
                q.put(None)
            self._streams.clear()

    def open_streams(self) -> int:
        """How many streams are connected now."""
        with self._lock:
            return len(self._streams)

    def replies_to(self, status_id: str) -> list[Posted]:
        """The gateway's statuses in reply to ``status_id``."""
        with self._lock:
            return [p for p in self.posted if p.in_reply_to_id == status_id]

    def wait_reply(self, status_id: str, timeout: float) -> Posted | None:
        """The first reply to ``status_id``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._posted_cond:
            while True:
                found = [p for p in self.posted if p.in_reply_to_id == status_id]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._posted_cond.wait(left)

    # --- the server side ----------------------------------------------------

    def _count(self, method: str, path: str) -> None:
        with self._lock:
            key = f"{method} {path}"
            self.requests[key] = self.requests.get(key, 0) + 1
            self.request_times.setdefault(key, []).append(time.monotonic())

    def _json(self, h: BaseHTTPRequestHandler, body: Any, status: int = 200) -> None:
        raw = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.send_header("X-RateLimit-Limit", "300")
        h.send_header("X-RateLimit-Remaining", "299")
        h.end_headers()
        h.wfile.write(raw)

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = parse_qs(url.query)
        self._count("GET", url.path)
        if url.path == "/api/v1/streaming/health":
            if not self.streaming:
                self._json(h, {"error": "Not Found"}, 404)
                return
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Content-Length", "2")
            h.end_headers()
            h.wfile.write(b"OK")
        elif url.path == "/api/v1/streaming/user/notification":
            if not self.streaming or self.refuse_stream:
                self._json(h, {"error": "Not Found"}, 404)
                return
            self._stream(h)
        elif url.path == "/api/v1/notifications":
            since = int(query.get("since_id", ["0"])[0])
            types = query.get("types[]", [])
            with self._lock:
                items = [
                    n
                    for n in self._notifications
                    if int(n["id"]) > since and (not types or n["type"] in types)
                ]
            self._json(h, list(reversed(items))[: int(query.get("limit", ["40"])[0])])
        elif url.path == "/api/v1/accounts/verify_credentials":
            self._json(h, {"id": GATEWAY_ID, "username": "pool", "acct": "pool", "bot": True})
        elif url.path.startswith("/api/v1/accounts/") and url.path.endswith("/statuses"):
            with self._lock:
                own = [{"id": p.id, "content": p.status} for p in reversed(self.posted)]
            self._json(h, own[:40])
        else:
            self._json(h, {"error": "Record not found"}, 404)

    def _stream(self, h: BaseHTTPRequestHandler) -> None:
        q: queue.Queue[bytes | None] = queue.Queue()
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        try:
            h.wfile.write(b":)\n\n")
            h.wfile.flush()
            with self._lock:
                self._streams.append(q)
                self.stream_connects += 1
            while True:
                try:
                    chunk = q.get(timeout=self.heartbeat)
                except queue.Empty:
                    chunk = b":thump\n\n"
                if chunk is None:
                    return
                h.wfile.write(chunk)
                h.wfile.flush()
        except OSError:
            pass
        finally:
            with self._lock:
                if q in self._streams:
                    self._streams.remove(q)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        self._count("POST", url.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        if url.path != "/api/v1/statuses":
            self._json(h, {"error": "Record not found"}, 404)
            return
        ctype = h.headers.get("Content-Type") or ""
        if "json" in ctype:
            form = {k: str(v) for k, v in json.loads(raw or b"{}").items() if v is not None}
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        with self._posted_cond:
            self._next_id += 1
            posted = Posted(
                id=str(self._next_id),
                in_reply_to_id=form.get("in_reply_to_id"),
                visibility=form.get("visibility"),
                status=form.get("status", ""),
                at=time.monotonic(),
            )
            self.posted.append(posted)
            self._posted_cond.notify_all()
        self._json(
            h,
            {
                "id": posted.id,
                "url": f"https://fake.example/@pool/{posted.id}",
                "in_reply_to_id": posted.in_reply_to_id,
                "visibility": posted.visibility,
                "content": f"<p>{posted.status}</p>",
            },
        )
