"""What every HTTP backend shares: one httpx client factory and one error mapping.

httpx is imported inside the functions that need it, so importing this module (and
so every backend's config module) stays cheap: the library loads only when an HTTP
backend is built.

Error mapping, the same for every service:

- connection errors, timeouts, 5xx, 408, 425 and 429 -> :class:`RetryableError`,
  with ``retry_after`` from ``Retry-After`` or the service's rate-limit reset header;
- any other 4xx (and unexpected 3xx) -> :class:`ServiceError`, a
  :class:`PermanentError` that keeps the status and the service's error code and text,
  so a backend can single out a case (X's duplicate 403, Bluesky's ``ExpiredToken``).

Messages carry the service name, the status and the service's own error text; never
a URL (a webhook URL may embed a token) and never a known secret.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr

from gateway import __version__
from gateway.config.publishers import HttpConfig
from gateway.config.secrets import MASK, register_secret
from gateway.model import PermanentError, PublishError, RateLimitedError, RetryableError

if TYPE_CHECKING:
    import httpx

    Auth = httpx.Auth | Callable[[httpx.Request], httpx.Request]

USER_AGENT = f"things-gateway/{__version__}"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_DETAIL = 200
MIN_REGISTERED_SECRET = 12
"""URL parts this long are masked process-wide (shorter ones only in this client's errors)."""
MAX_REPLY_BYTES = 1024 * 1024
"""A service's answer is read up to this size; the rest is dropped unread."""
MAX_JSON_DEPTH = 64
"""Deeper JSON in an answer is refused as not JSON (never a RecursionError)."""
MAX_CAP_WAIT = 86400.0 + 300.0
"""The longest wait a rate-limit answer can ask for (X's 24-hour caps, and a margin)."""
MIN_CAP_WAIT = 1.0
"""A reset sooner than this is no credible wait for a rate limit (a plain retry)."""
DAILY_CAPS = ("x-user-limit-24hour", "x-app-limit-24hour")
"""X's 24-hour caps on posting (per user, per app): ``-remaining`` and ``-reset``."""


class ServiceError(PermanentError):
    """The service refused the request (4xx): retrying the same request cannot help."""

    def __init__(self, message: str, *, status: int, code: str | None, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        """The service's machine-readable error name, when it sends one."""
        self.detail = detail
        """The service's error text (secret-free, shortened)."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context every HTTP backend shares, made once per process.

    httpx builds a new context for every client, and each loads the whole CA bundle
    (about 140 certificates, some 240 KiB of OpenSSL memory) that OpenSSL 3 does not
    give back when the context is freed (CPython issue #84904): one client per
    backend per reload made the daemon grow by that much at every reload
    (``bench/soak.py``, traced with heaptrack).  One shared context costs it once.
    It is httpx's own default (``certifi``'s bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set), read at the first HTTP backend's start: a changed CA
    bundle is read at the next restart, not at a reload.
    """
    import httpx

    return httpx.create_ssl_context()


def make_client(
    base_url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    auth: Auth | None = None,
) -> httpx.Client:
    """An httpx client with timeouts on every phase and the gateway's User-Agent."""
    import httpx

    # httpx logs each request's full URL at INFO; URLs can carry tokens (webhooks).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        auth=auth,
        follow_redirects=False,
        verify=tls_context(),
    )


class ApiClient:
    """One service's HTTP client: every call times out and fails as a PublishError.

    ``secrets`` are scrubbed from every error message this client raises.
    """

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        auth: Auth | None = None,
        secrets: Iterable[SecretStr | str | None] = (),
    ) -> None:
        self.service = service
        self.last_headers: Mapping[str, str] = {}
        """The headers of the last answer (rate-limit counters), read by the backend."""
        self._client = make_client(base_url, timeout=timeout, headers=headers, auth=auth)
        # Longest first, so a whole URL is scrubbed before the token inside it.
        self._secrets: tuple[str, ...] = tuple(
            sorted(
                (
                    value
                    for s in secrets
                    if s is not None
                    for value in [s.get_secret_value() if isinstance(s, SecretStr) else s]
                    if value
                ),
                key=len,
                reverse=True,
            )
        )

        for secret in self._secrets:
            # Masked everywhere from now on: logs, stored receipts, the health topic.
            if len(secret) >= MIN_REGISTERED_SECRET:
                register_secret(secret)

    def scrub(self, text: str) -> str:
        """``text`` with this client's secrets (URL parts included) masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; return a 2xx response or raise RetryableError/ServiceError."""
        import httpx

        try:
            response = self._send_bounded(self._client.build_request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        self.last_headers = response.headers
        if response.is_success:
            return response
        raise self._scrub(error_for_response(self.service, response))

    def _send_bounded(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; keep at most MAX_REPLY_BYTES of the answer's body."""
        return self._bounded(self._client.send(request, stream=True), request)

    def _bounded(self, response: httpx.Response, request: httpx.Request) -> httpx.Response:
        """A streamed ``response`` read (at most MAX_REPLY_BYTES of it) and closed."""
        import httpx

        try:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    break
        finally:
            response.close()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=b"".join(chunks)[:MAX_REPLY_BYTES],
            request=request,
        )

    def _transport_error(self, exc: Exception) -> RetryableError:
        """A connection failure or timeout as a RetryableError naming only its kind."""
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return RetryableError(f"{self.service}: timed out ({type(exc).__name__})")
        return RetryableError(f"{self.service}: connection failed ({type(exc).__name__})")

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, *, read_timeout: float, **kwargs: Any
    ) -> Iterator[httpx.Response]:
        """A long-lived 2xx response to read as it comes (server-sent events).

        ``read_timeout``: the longest silence accepted between two chunks (a stream
        that sends heartbeats stays open).  Fails like :meth:`request`.
        """
        import httpx

        timeout = httpx.Timeout(self._client.timeout.connect or 10.0, read=read_timeout)
        request = self._client.build_request(method, path, timeout=timeout, **kwargs)
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        try:
            self.last_headers = response.headers
            if not response.is_success:
                refused = self._bounded(response, request)
                raise self._scrub(error_for_response(self.service, refused))
            yield response
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{self.service}: stream silent ({type(exc).__name__})") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise RetryableError(f"{self.service}: stream dropped ({type(exc).__name__})") from None
        finally:
            response.close()

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`request`, returning the JSON object the service answered."""
        response = self.request(method, path, **kwargs)
        try:
            body = loads_bounded(response.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # A 2xx that is not the API's JSON is a proxy or captive portal: try later.
            raise RetryableError(f"{self.service}: HTTP {response.status_code} without JSON")
        return body

    def pick(self, body: Any, *keys: str) -> Any:
        """``body[k1][k2]...``; a missing field is an unexpected answer (retried later)."""
        for key in keys:
            if not isinstance(body, dict) or body.get(key) is None:
                raise RetryableError(f"{self.service}: answer lacks {'.'.join(keys)}")
            body = body[key]
        return body

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _scrub(self, error: PublishError) -> PublishError:
        error.args = (self.scrub(str(error)),)
        if isinstance(error, ServiceError):
            error.detail = self.scrub(error.detail)
        return error


_R = TypeVar("_R")


class ReadHold:
    """Holds a publisher's reads (mentions) after a rate limit until its reset.

    A read that failed with a ``retry_after`` (a 429's reset header) makes every read
    before that moment fail at once, without a request.
    """

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._what = what
        self._clock = clock
        self.until = 0.0

    def run(self, call: Callable[[], _R]) -> _R:
        """``call()``, unless held; a RetryableError with ``retry_after`` starts a hold."""
        wait = self.until - self._clock()
        if wait > 0:
            raise RetryableError(
                f"{self._what}: rate-limited for {wait:.0f} s more", retry_after=wait
            )
        try:
            return call()
        except RetryableError as exc:
            if exc.retry_after:
                self.until = self._clock() + exc.retry_after
            raise

    def release(self) -> None:
        """End the hold now (the reset has passed)."""
        self.until = 0.0


def url_secrets(url: SecretStr, min_length: int = 8) -> list[str]:
    """A secret URL and the parts of it that may be tokens on their own.

    Servers echo a path segment or query value back in error texts; each long
    enough part is scrubbed too, not only the URL as a whole.
    """
    from urllib.parse import parse_qsl, unquote, urlsplit

    value = url.get_secret_value()
    split = urlsplit(value)
    parts = [value, split.password or ""]
    parts += [unquote(segment) for segment in split.path.split("/")]
    parts += [v for _, v in parse_qsl(split.query)]
    return [p for p in dict.fromkeys(parts) if len(p) >= min_length]


def error_for_response(
    service: str, response: httpx.Response, now: float | None = None
) -> PublishError:
    """The RetryableError or ServiceError a non-2xx response stands for."""
    status = response.status_code
    code, detail = service_error_text(response)
    message = f"{service}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        cap, wait = rate_limit_wait(response.headers, now)
        if wait is not None and MIN_CAP_WAIT <= wait <= MAX_CAP_WAIT:
            # A rate limit or cap with a credible reset: waiting for it is no failed
            # attempt.  A reset now, past or years away is a plain retry (the backoff
            # and max_attempts hold against a confused or hostile server).
            return RateLimitedError(f"{message} ({cap})", retry_after=wait)
        return RetryableError(message, retry_after=wait)
    if status >= 500 or status in RETRYABLE_STATUSES:
        wait = retry_after(response.headers, now) if status == 503 else None
        return RetryableError(message, retry_after=wait)
    return ServiceError(message, status=status, code=code, detail=detail)


def service_error_text(response: httpx.Response) -> tuple[str | None, str]:
    """The service's error code and text from a JSON error body (or the body's start)."""
    try:
        body = loads_bounded(response.content)
    except ValueError:
        return None, " ".join(response.text[: MAX_DETAIL * 4].split())[:MAX_DETAIL]
    if not isinstance(body, dict):
        return None, json.dumps(body)[:MAX_DETAIL]
    code = body.get("error") if isinstance(body.get("error"), str) else None
    parts = [
        body[key]
        for key in ("message", "detail", "error_description", "title")
        if isinstance(body.get(key), str)
    ]
    errors = body.get("errors")
    if isinstance(errors, list):
        parts += [e["message"] for e in errors if isinstance(e, dict) and "message" in e]
    text = "; ".join(str(p) for p in parts) or (code or "")
    if code and parts:
        text = f"{code}: {text}"
    return code, text[:MAX_DETAIL]


def loads_bounded(
    data: bytes | str, max_bytes: int = MAX_REPLY_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``json.loads`` for a stranger's answer: ValueError when too big or too deep.

    A reply of 100,000 ``[`` would otherwise raise RecursionError (not a ValueError),
    escaping every ``except ValueError`` around the parse.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise ValueError(f"JSON answer over {max_bytes} bytes")
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        raise ValueError(f"JSON answer nested deeper than {max_depth}")
    try:
        return json.loads(raw)
    except RecursionError:  # pragma: no cover - json_depth refuses these first
        raise ValueError("JSON answer nested too deep") from None


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, skipping strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def rate_limit_wait(
    headers: Mapping[str, str], now: float | None = None
) -> tuple[str, float | None]:
    """Which limit a 429 hit and how long until it resets: ``(name, seconds)``.

    X sends its 24-hour caps (``x-user-limit-24hour-*``, ``x-app-limit-24hour-*``)
    beside the 15-minute window (``x-rate-limit-*``); a used-up daily cap resets at its
    own time, hours after the window.  Otherwise the reset headers of
    :func:`retry_after`.
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    for cap in DAILY_CAPS:
        if lowered.get(f"{cap}-remaining", "").strip() == "0":
            at = _parse_instant(lowered.get(f"{cap}-reset", "").strip(), now)
            if at is not None:
                return cap.replace("x-", "", 1).replace("-limit-24hour", " 24-hour cap"), max(
                    0.0, round(at - now, 3)
                )
    return "rate limit", retry_after(headers, now)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before trying again, from the first rate-limit header present.

    - ``Retry-After``: delta seconds or an HTTP date (RFC 9110);
    - ``X-RateLimit-Reset`` (Mastodon): an ISO-8601 instant;
    - ``ratelimit-reset`` (Bluesky): epoch seconds (small values: delta seconds);
    - ``x-rate-limit-reset`` (X): epoch seconds.
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after", "x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"):
        value = lowered.get(name)
        if value is None:
            continue
        at = _parse_instant(value.strip(), now)
        if at is not None:
            return max(0.0, round(at - now, 3))
    return None


def _parse_instant(value: str, now: float) -> float | None:
    """An epoch time from delta seconds, epoch seconds, ISO-8601 or an HTTP date."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        # Below ~2001-09 a number can only be a delay, not an instant.
        return number if number >= 1e9 else now + number
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


CHUNK = 64 * 1024
"""Bytes read from a file at a time when a body is streamed from disk."""


def file_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in :data:`CHUNK` pieces (a body sent without holding the file)."""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class StreamedBody:
    """A request body of bytes and files, read from disk each time it is iterated:
    once to sign it, once to send it, never all in memory.  Pass it as ``content``
    with ``Content-Length: len(body)``."""

    def __init__(self, pieces: Sequence[bytes | Path]) -> None:
        self._pieces = tuple(pieces)
        self.length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in pieces)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces:
            if isinstance(piece, Path):
                yield from file_chunks(piece)
            else:
                yield piece


def multipart_body(
    files: Sequence[tuple[str, tuple[str, bytes | Path, str]]],
    fields: Mapping[str, str] | None = None,
) -> tuple[StreamedBody, str]:
    """A multipart/form-data body of text ``fields`` then ``files`` (each as bytes, or
    a path streamed from disk), and its Content-Type."""
    import secrets

    boundary = secrets.token_hex(16)
    pieces: list[bytes | Path] = []
    for name, value in (fields or {}).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'
        pieces += [head.encode(), value.encode(), b"\r\n"]
    for name, (filename, data, mime) in files:
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quoted(name)}"; '
            f'filename="{_quoted(filename)}"\r\n'
            f"Content-Type: {mime}\r\n\r\n"
        )
        pieces += [head.encode(), data, b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode())
    return StreamedBody(pieces), f"multipart/form-data; boundary={boundary}"


def _quoted(value: str) -> str:
    """A form-data parameter value as browsers send it (HTML's multipart encoding)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode_multipart(
    fields: Mapping[str, str], files: Sequence[tuple[str, tuple[str, bytes, str]]]
) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, built up front (e.g. to sign it)."""
    import httpx

    request = httpx.Request("POST", "http://localhost/", data=dict(fields), files=list(files))
    return request.read(), request.headers["Content-Type"]


__all__ = [
    "USER_AGENT",
    "ApiClient",
    "HttpConfig",
    "ServiceError",
    "StreamedBody",
    "encode_multipart",
    "error_for_response",
    "file_chunks",
    "json_depth",
    "loads_bounded",
    "make_client",
    "multipart_body",
    "retry_after",
    "url_secrets",
]
