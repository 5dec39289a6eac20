"""One thread per publisher with an account: read mentions, store them, answer them.

A round: read the mentions after the stored cursor (the publisher's
``read_mentions``), store them and the new cursor in one transaction, then let
:class:`~gateway.conversations.answering.Conversations` decide every undecided
mention.  A failed read is logged rate-limited and retried next round; the cursor
is not moved.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from gateway.conversations.answering import Conversations
from gateway.conversations.inbox import Inbox
from gateway.model import Mention
from gateway.support.ratelog import RateLimitedLog, known_failure

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)


class MentionSource(Protocol):
    """A publisher that can read the mentions of its account."""

    id: str

    def read_mentions(self, since_id: str | None) -> tuple[list[Mention], str | None]:
        """Mentions after ``since_id`` (oldest first) and the newest id read."""
        ...


class MentionPoller:
    """Polls one publisher's mentions every ``interval`` seconds on its own thread."""

    def __init__(
        self,
        source: MentionSource,
        inbox: Inbox,
        conversations: Conversations,
        interval: float,
    ) -> None:
        self._source = source
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
        self._conversations.answer_pending()
        return added

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
            self.poll_once()
            self._stop.wait(self._interval)
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
        if self._thread is not None:
            self._thread.join(timeout)
