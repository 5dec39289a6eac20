"""A small HTTP test server: routes, a record of every request, and injected faults.

Each fake service subclasses :class:`FakeServer` and lists its routes.  The server
listens on 127.0.0.1 on a free port in a background thread; use it as a context
manager so the socket and the thread are always cleaned up.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import re
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Part:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        """The part's data as UTF-8 text."""
        return self.data.decode("utf-8")


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name."""
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def parts(self) -> list[Part]:
        """The parts of a multipart/form-data body, in order."""
        return parse_multipart(self.header("content-type") or "", self.body)

    def part(self, name: str) -> Part:
        """The first multipart part called ``name``."""
        return next(p for p in self.parts if p.name == name)


@dataclass
class Reply:
    """A response to send: a JSON-able body (or raw bytes), a status and headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """What to do instead of answering normally.

    - ``reply``: answer ``reply`` without handling the request;
    - ``slow``: wait ``delay``, then handle the request and answer;
    - ``stall``: handle the request (it takes effect), then wait ``delay`` before
      answering: a client with a shorter timeout never learns it worked;
    - ``reset``: cut the connection without handling the request;
    - ``reset_after``: handle the request, then cut the connection instead of answering.
    """

    kind: Literal["reply", "slow", "stall", "reset", "reset_after"]
    reply: Reply | None = None
    delay: float = 0.0
    path: str | None = None
    """Only requests whose path contains this are affected (None: any)."""


Route = Callable[[Recorded, re.Match[str]], Reply]


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Parse multipart/form-data with the standard library's MIME parser."""
    if not content_type.startswith("multipart/"):
        return []
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = []
    for sub in message.iter_parts():  # type: ignore[attr-defined,unused-ignore]
        data = sub.get_payload(decode=True) or b""
        parts.append(
            Part(
                name=str(sub.get_param("name", header="content-disposition")),
                filename=sub.get_filename(),
                content_type=sub.get("content-type"),
                data=bytes(data),
            )
        )
    return parts


class FakeServer:
    """Base class of the fake services."""

    service = "fake"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.errors: list[Exception] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._routes = [(m, re.compile(p), fn) for m, p, fn in self.routes()]
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving, wake slow handlers and close the socket."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.cut_connections()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """The server's base URL."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what subclasses provide ---------------------------------------------

    def routes(self) -> list[tuple[str, str, Route]]:
        """``(method, path regex, handler)`` triples."""
        return []

    # -- faults and assertions -----------------------------------------------

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``fault``."""
        with self._lock:
            self._faults.extend([fault] * times)

    def reply_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next requests with this status, body and headers."""
        self.fail_next(Fault("reply", Reply(status, body, headers or {}), path=path), times)

    def calls(self, path_part: str, method: str | None = None) -> list[Recorded]:
        """The recorded requests whose path contains ``path_part``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if path_part in r.path and (method is None or r.method == method)
            ]

    # -- request handling ------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is None or fault.path in path:
                    return self._faults.pop(i)
        return None

    def dispatch(self, request: Recorded) -> Reply | Fault:
        """Record ``request``, then fault or route it."""
        with self._lock:
            self.requests.append(request)
        fault = self._take_fault(request.path)
        if fault is not None:
            if fault.kind == "slow":
                self._stopping.wait(fault.delay)
                return self._route(request)
            if fault.kind == "stall":
                reply = self._route(request)
                self._stopping.wait(fault.delay)
                return reply
            if fault.kind == "reset_after":
                self._route(request)
                return fault
            return fault.reply if fault.kind == "reply" and fault.reply else fault
        return self._route(request)

    def _route(self, request: Recorded) -> Reply:
        for method, pattern, fn in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                with self._lock:
                    try:
                        return fn(request, match)
                    except Exception as exc:  # a bug in the fake: make it visible
                        self.errors.append(exc)
                        return Reply(500, {"error": "FakeServerBug", "message": repr(exc)})
        return Reply(404, {"error": "NotFound", "message": f"no route {request.path}"})


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), after stop() has cut their sockets.
    daemon_threads = False
    block_on_close = True
    fake: FakeServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """End every kept-alive connection, so handler threads stop waiting on them."""
        with self.sockets_lock:
            for sock in self.open_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that time out or get a reset leave broken sockets: expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _serve(self) -> None:
        split = urlsplit(self.path)
        request = Recorded(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
        )
        outcome = self.server.fake.dispatch(request)
        if isinstance(outcome, Fault):
            self._reset()
            return
        self._send(outcome)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload, content_type = reply.body, "application/octet-stream"
        elif reply.body is None:
            payload, content_type = b"", "application/json"
        else:
            payload, content_type = json.dumps(reply.body).encode(), "application/json"
        self.send_response(reply.status)
        headers = {"Content-Type": content_type, **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send a TCP RST: the client sees a reset connection.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
