"""Questions over MQTT: ``<status_prefix>/<name>/ask`` in, ``.../answer`` out.

A venue's kiosk, Home Assistant or Node-RED asks by publishing a JSON object
``{"id": "...", "from": "...", "text": "..."}`` (QoS 1) on the ask topic.  In
paho's network thread, before the message is acknowledged, the question is checked
and stored in the ``mentions`` table as a :class:`~gateway.model.Mention` of the
``ask`` publisher, keyed by its ``id``: a question sent twice (a redelivery, a
retained message seen again after a reconnect) is stored and answered once.  An
answering thread then decides it like any mention (the same ``[[replies]]``,
safety rules and caps), and the answer goes through the outbox, exactly once, to
the :class:`AnswerPublisher`, which publishes ``{"id", "to", "text", "images",
"post_id"}`` (QoS 1) on the answer topic.  An answer is never retained.

Bad questions (not JSON, not an object, fields missing or of the wrong type or
length, over :data:`MAX_ASK_BYTES`) are counted and logged rate-limited, and
dropped: one message is never fatal.  The asker's text is data, as on every
service: matched, never rendered as a template.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.conversations.answering import ASK_PUBLISHER, Conversations
from gateway.conversations.inbox import Inbox
from gateway.model import (
    Capabilities,
    MediaItem,
    Mention,
    Post,
    Receipt,
    RetryableError,
    VideoLimits,
)
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

MAX_ASK_BYTES = 4096
MAX_ID = 64
MAX_FROM = 64
MAX_TEXT = 1000
ANSWER_WAIT = 1.0
"""Seconds the answering thread sleeps when no question woke it (a safety net)."""


def ask_topic(status_prefix: str, gateway: str) -> str:
    """Where questions are asked."""
    return f"{status_prefix}/{gateway}/ask"


def answer_topic(status_prefix: str, gateway: str) -> str:
    """Where answers are published."""
    return f"{status_prefix}/{gateway}/answer"


class AskError(ValueError):
    """A question that is not one (the reason, without its content)."""


def _field(document: dict[str, object], name: str, limit: int, default: str | None) -> str:
    value = document.get(name, default)
    if not isinstance(value, str):
        raise AskError(f"'{name}' must be a string")
    value = value.strip()
    if not value:
        raise AskError(f"'{name}' is empty")
    if len(value) > limit:
        raise AskError(f"'{name}' is longer than {limit} characters")
    if any(ord(c) < 32 for c in value) and name != "text":
        raise AskError(f"'{name}' holds control characters")
    return value


def parse_ask(payload: bytes, now: datetime) -> Mention:
    """The question in ``payload`` as a mention of the ``ask`` publisher.

    Raises :class:`AskError` when it is not a valid question.
    """
    if len(payload) > MAX_ASK_BYTES:
        raise AskError(f"{len(payload)} bytes, more than {MAX_ASK_BYTES}")
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        raise AskError("not JSON") from None
    if not isinstance(document, dict):
        raise AskError("not a JSON object")
    return Mention(
        publisher=ASK_PUBLISHER,
        remote_id=_field(document, "id", MAX_ID, None),
        author=_field(document, "from", MAX_FROM, "mqtt"),
        text=_field(document, "text", MAX_TEXT, None),
        created_at=now,
        visibility="direct",
    )


@dataclass
class AskStats:
    """What came in on the ask topic."""

    questions: int = 0
    repeated: int = 0
    rejected: int = 0


class MqttAsks:
    """Takes questions from the ask topic (paho's thread) and answers them (its own)."""

    def __init__(
        self,
        topic: str,
        inbox: Inbox,
        conversations: Conversations,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        """``wake`` is called after answers were queued (the delivery workers)."""
        self.topic = topic
        self._wake_deliveries = wake
        self.stats = AskStats()
        self._inbox = inbox
        self._conversations = conversations
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on one of the gateway's extra topics; only the ask topic counts.

        Runs in paho's thread, before the message is acknowledged: the question is
        stored before anything else happens to it."""
        if topic != self.topic:
            return
        try:
            mention = parse_ask(payload, self._clock())
        except AskError as exc:
            self.stats.rejected += 1
            _ratelog.warning("ask", "a question on %s was dropped: %s", topic, exc)
            return
        if self._inbox.store([mention], ASK_PUBLISHER, None):
            self.stats.questions += 1
            self._wake.set()
        else:
            self.stats.repeated += 1
            log.debug("question %s was asked before: answered once", mention.remote_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(ANSWER_WAIT)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self._conversations.answer_pending():
                    self._wake_deliveries()
            except Exception:
                log.exception("answering questions failed; retrying")
                self._stop.wait(ANSWER_WAIT)
        self._inbox.close()

    def start(self) -> None:
        """Start the answering thread (questions stored before a restart are answered too)."""
        self._wake.set()
        self._thread = threading.Thread(target=self._run, name="mqtt-asks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current round of answers."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


class AnswerPublisher:
    """Publishes answers to MQTT questions on the answer topic, through the gateway's
    own broker connection (``send``: topic, payload → False when not connected)."""

    def __init__(self, topic: str, send: Callable[[str, bytes], bool]) -> None:
        self.id = ASK_PUBLISHER
        self.capabilities = Capabilities(max_images=4, supports_language=True, video=VideoLimits())
        self.topic = topic
        self._send = send

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        """Publish the answer (QoS 1); a lost connection is retried by the outbox."""
        if post.reply is None:
            raise RetryableError("ask: an answer without the question it answers")
        document = {
            "id": post.reply.remote_id,
            "to": post.reply.author,
            "text": text,
            "images": [str(item.path) for item in media],
            "post_id": post.id,
        }
        payload = json.dumps(document, ensure_ascii=False).encode()
        if not self._send(self.topic, payload):
            raise RetryableError("ask: not connected to the MQTT broker")
        return Receipt(remote_id=post.reply.remote_id)

    def close(self) -> None:
        """Nothing to release: the connection is the gateway's."""
