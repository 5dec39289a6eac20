"""One thread per publisher with an account: read mentions, store them, answer them.

A round: read the mentions after the stored cursor (the publisher's
``read_mentions``), store them and the new cursor in one transaction, then let
:class:`~gateway.conversations.answering.Conversations` decide every undecided
mention.  A failed read is logged rate-limited and retried next round; the cursor
is not moved.

With ``streaming`` on and a source that can stream (Mastodon's
``/api/v1/streaming/user/notification``, when ``/api/v1/streaming/health`` says OK),
the thread follows the stream instead: it polls once as the stream opens (nothing
posted while it was down is missed), stores each streamed mention exactly like a
polled one (same (publisher, remote id) key, so one read both ways is stored once),
and when the stream drops it polls at ``interval`` while it waits to reconnect, with
a backoff doubling from 1 s to 60 s.  A server without streaming is polled, and
probed again every ten minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gateway.conversations.answering import Conversations
from gateway.conversations.inbox import Inbox
from gateway.model import Mention, PermanentError
from gateway.support.ratelog import RateLimitedLog, known_failure

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)


class MentionSource(Protocol):
    """A publisher that can read the mentions of its account."""

    id: str

    def read_mentions(self, since_id: str | None) -> tuple[list[Mention], str | None]:
        """Mentions after ``since_id`` (oldest first) and the newest id read."""
        ...


@runtime_checkable
class MentionStream(Protocol):
    """A source that can also push its mentions (a streaming API)."""

    def streaming_available(self) -> bool:
        """Whether the server offers the stream now."""
        ...

    def stream_mentions(
        self,
        on_open: Callable[[], object],
        on_mention: Callable[[Mention, str], None],
        stop: threading.Event,
    ) -> None:
        """Follow the stream until it ends (returns) or drops (raises)."""
        ...

    def stop_stream(self) -> None:
        """Close the stream being read, from another thread."""
        ...


BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STREAM_STEADY = 60.0
"""A stream that stayed up this long resets the backoff."""
STREAM_PROBE_INTERVAL = 600.0
"""How long a server without streaming is polled before it is probed again."""


class MentionPoller:
    """Reads one publisher's mentions on its own thread: its stream, or every ``interval``."""

    def __init__(
        self,
        source: MentionSource,
        inbox: Inbox,
        conversations: Conversations,
        interval: float,
        *,
        streaming: bool = False,
        wake: Callable[[], object] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``wake``: called after answers were queued, so delivery starts now rather
        than at the delivery workers' next idle check (up to a minute later)."""
        self._wake = wake
        self._source = source
        self._stream = source if streaming and isinstance(source, MentionStream) else None
        self._clock = clock
        self.stream_drops = 0
        self.stream_opens = 0
        """Streams opened (each after its catch-up poll)."""
        self.streamed = 0
        self._failures = 0
        self._inbox = inbox
        self._conversations = conversations
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def poll_once(self) -> int:
        """One round: read, store (then the cursor), answer; returns mentions stored."""
        publisher = self._source.id
        try:
            mentions, cursor = self._source.read_mentions(self._inbox.cursor(publisher))
        except Exception as exc:
            self.errors += 1
            _ratelog.warning(
                f"mentions:{publisher}",
                "%s: mentions not read: %s",
                publisher,
                known_failure(exc) or repr(exc),
            )
            return 0
        added = self._inbox.store(mentions, publisher, cursor)
        self._answer()
        return added

    def _answer(self) -> None:
        if self._conversations.answer_pending():
            self._wake()

    def _on_open(self) -> None:
        """The stream is connected: poll once, so nothing posted while it was down is missed."""
        self.poll_once()
        self.stream_opens += 1

    def _on_streamed(self, mention: Mention, notification_id: str) -> None:
        """A streamed mention: stored like a polled one (the cursor moves to it), answered."""
        self.streamed += 1
        self._inbox.store([mention], self._source.id, notification_id or None)
        self._answer()

    def _follow_stream(self, stream: MentionStream) -> float:
        """Follow the stream once; returns seconds until the next attempt."""
        publisher = self._source.id
        started = self._clock()
        try:
            stream.stream_mentions(self._on_open, self._on_streamed, self._stop)
        except PermanentError as exc:
            log.info("%s: no streaming (%s); polling", publisher, exc)
            return STREAM_PROBE_INTERVAL
        except Exception as exc:
            _ratelog.warning(
                f"stream:{publisher}",
                "%s: mention stream dropped: %s",
                publisher,
                known_failure(exc) or repr(exc),
            )
        if self._stop.is_set():
            return 0.0
        self.stream_drops += 1
        if self._clock() - started >= STREAM_STEADY:
            self._failures = 0
        self._failures += 1
        return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1)))

    def _poll_for(self, seconds: float) -> None:
        """Wait ``seconds``, polling every ``interval`` meanwhile when it is longer
        (the next stream's opening polls anyway)."""
        deadline = self._clock() + seconds
        while not self._stop.is_set():
            left = deadline - self._clock()
            if left < self._interval:
                self._stop.wait(max(0.0, left))
                return
            self.poll_once()
            self._stop.wait(self._interval)

    def _learn_own_account(self) -> None:
        account_id = getattr(self._source, "account_id", None)
        if callable(account_id):
            try:
                self._conversations.set_own_account(self._source.id, str(account_id()))
            except Exception as exc:
                _ratelog.warning(
                    f"account:{self._source.id}",
                    "%s: own account unknown: %s",
                    self._source.id,
                    known_failure(exc) or repr(exc),
                )

    def _run(self) -> None:
        self._learn_own_account()
        while not self._stop.is_set():
            stream = self._stream
            if stream is None:
                self.poll_once()
                self._stop.wait(self._interval)
            elif not stream.streaming_available():
                log.info("%s: streaming not offered; polling", self._source.id)
                self._poll_for(STREAM_PROBE_INTERVAL)
            else:
                wait = self._follow_stream(stream)
                if not self._stop.is_set():
                    self._poll_for(wait)
        self._inbox.close()

    def start(self) -> None:
        """Start polling on a daemon thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"mentions-{self._source.id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current round."""
        self._stop.set()
        if self._stream is not None:
            self._stream.stop_stream()
        if self._thread is not None:
            self._thread.join(timeout)
