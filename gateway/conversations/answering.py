"""Deciding and answering mentions: safety first, then the matching ``[[replies]]``.

Order of the checks (the first that applies is the recorded reason): ``self``,
``too old`` (``max_age``), ``denied`` (deny lists, or not on a non-empty allow list),
``bot``, ``quiet hours`` (when the mention came in), ``no match``, ``cooldown``,
``asker cap``, ``global cap``.  The asker's text is data: it is matched, never
rendered as a template; a template sees it only as ``mention.quote`` (at most
``quote_chars`` characters), and every ``{{ ... }}`` output is defused (no
mentions, links or markup).  The answer is committed to the outbox in
the same transaction that marks the mention answered, as a real reply
(:class:`gateway.model.ReplyTarget`) that publishers never make wider than the mention.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from datetime import time as dt_time
from typing import Any

from gateway.compose.composer import ComposeError, MessageEvent, render
from gateway.compose.textfit import fit_text
from gateway.config.conversations import ConversationsSection, ReplyConfig
from gateway.conversations.inbox import Inbox
from gateway.model import Capabilities, MediaItem, Mention, Post, new_post_id
from gateway.outbox.store import MentionDecidedError, Outbox
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

ASK_PUBLISHER = "ask"
"""The publisher id of questions asked over MQTT and of their answers
(:mod:`gateway.conversations.mqttask`): no @handle is put before an answer there."""
HANDLE = re.compile(r"^[A-Za-z0-9_.\-]+(@[A-Za-z0-9.\-]+)?$")
"""What an asker's handle must look like to be mentioned in an answer."""
MENTION_WORD = re.compile(r"(?<!\w)@[\w.\-]+(@[\w.\-]+)?")


Attach = Callable[
    [ReplyConfig, Post, tuple[str, ...]], tuple[Post, Mapping[str, tuple[MediaItem, ...]]]
]
"""Adds a reply's photos: (reply, post, publisher ids) → the post with its media, and
each publisher's fitted copies."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What becomes of one mention: a reply (and its text per publisher) or a reason."""

    reply: ReplyConfig | None
    reason: str | None = None
    texts: Mapping[str, str] | None = None


def strip_handles(text: str) -> str:
    """The mention's text without @handles (the account's own and others)."""
    return " ".join(MENTION_WORD.sub(" ", text).split())


def quote(text: str, limit: int) -> str:
    """At most ``limit`` characters of the asker's words (handles removed)."""
    words = strip_handles(text)
    return words if len(words) <= limit else words[: max(0, limit - 1)].rstrip() + "…"


def mention_event(mention: Mention, quote_chars: int) -> MessageEvent:
    """What an ``on_mention`` rule's templates see as ``event`` (``topic`` is
    ``mentions/<publisher>``): who asked, where, and a short quote of the words,
    defused like every event value."""
    return MessageEvent(
        f"mentions/{mention.publisher}",
        {
            "publisher": mention.publisher,
            "id": mention.remote_id,
            "author": mention.author,
            "author_name": mention.author_name or mention.author,
            "quote": quote(mention.text, quote_chars),
            "lang": mention.lang,
            "url": mention.url,
        },
    )


def _domain(author: str) -> str:
    return author.rsplit("@", 1)[1].lower() if "@" in author else ""


class Conversations:
    """Answers stored mentions; one instance per gateway, called from its poller threads."""

    def __init__(
        self,
        section: ConversationsSection,
        replies: tuple[ReplyConfig, ...],
        inbox: Inbox,
        outbox: Outbox,
        *,
        context: Callable[[datetime], dict[str, Any]] = lambda now: {},
        own_accounts: Mapping[str, str] | None = None,
        local_domain: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        tz: tzinfo = UTC,
        quiet: Callable[[dt_time], bool] | None = None,
        attach: Attach | None = None,
        capabilities: Mapping[str, Capabilities] | None = None,
    ) -> None:
        """``own_accounts``: publisher id → the account id of the gateway there (never
        answered); ``local_domain``: publisher id → its server's host, so a local
        ``user`` and ``user@host`` are the same asker for the allow and deny lists;
        ``capabilities``: publisher id → its limits, which each answer is fitted to
        (Bluesky's 300 graphemes, X's 280 weighted characters) like a rule's post."""
        self._section = section
        self._replies = replies
        self._patterns = {
            r.id: re.compile(
                r.regex or "|".join(re.escape(k) for k in r.match) or r"(?!)", re.IGNORECASE
            )
            for r in replies
        }
        self._inbox = inbox
        self._outbox = outbox
        self._context = context
        self._own = dict(own_accounts or {})
        self._local = dict(local_domain or {})
        self._clock = clock
        self._answering = threading.Lock()
        self._tz = tz
        self._quiet = quiet
        self._attach = attach
        self._caps = capabilities if capabilities is not None else {}

    def set_own_account(self, publisher: str, account_id: str) -> None:
        """Record the gateway's own account id on ``publisher``."""
        self._own[publisher] = account_id

    def match(self, text: str) -> ReplyConfig | None:
        """The first ``[[replies]]`` entry whose ``match`` finds the text, else the fallback."""
        words = strip_handles(text)
        for reply in self._replies:
            if not reply.fallback and self._patterns[reply.id].search(words):
                return reply
        return next((r for r in self._replies if r.fallback), None)

    def _full_handle(self, mention: Mention) -> str:
        author = mention.author.lower()
        host = self._local.get(mention.publisher)
        return f"{author}@{host}" if host and "@" not in author else author

    def _refused(self, mention: Mention, now: float) -> str | None:
        s = self._section
        if mention.author_id and self._own.get(mention.publisher) == mention.author_id:
            return "self"
        if now - mention.created_at.timestamp() > s.max_age.total_seconds():
            return "too old"
        handle = self._full_handle(mention)
        domain = _domain(handle)
        names = {handle, mention.author.lower()}
        if names & set(s.deny_accounts) or (domain and domain in s.deny_domains):
            return "denied"
        allowed = bool(names & set(s.allow_accounts)) or bool(domain and domain in s.allow_domains)
        if (s.allow_accounts or s.allow_domains) and not allowed:
            return "denied"
        if mention.bot and not (s.answer_bots or bool(names & set(s.allow_accounts))):
            return "bot"
        if self._quiet is not None:
            local = mention.created_at.astimezone(self._tz).time().replace(tzinfo=None)
            if self._quiet(local):
                return "quiet hours"
        return None

    def _capped(self, mention: Mention, now: float) -> str | None:
        s = self._section
        mine = self._inbox.answered_since(now - 3600.0, mention.author)
        if mine and now - mine[0] < s.cooldown.total_seconds():
            return "cooldown"
        if len(mine) >= s.per_asker_hourly:
            return "asker cap"
        if len(self._inbox.answered_since(now - 3600.0)) >= s.global_hourly:
            return "global cap"
        return None

    def decide(self, mention: Mention, now: float | None = None) -> Decision:
        """Check a mention against the safety settings and the replies; render the answer."""
        now = self._clock() if now is None else now
        reason = self._refused(mention, now)
        if reason is not None:
            return Decision(None, reason)
        reply = self.match(mention.text)
        if reply is None:
            return Decision(None, "no match")
        reason = self._capped(mention, now)
        if reason is not None:
            return Decision(reply, reason)
        return Decision(reply, None, self.render(reply, mention, now))

    def render(self, reply: ReplyConfig, mention: Mention, now: float) -> dict[str, str]:
        """The answer's text per publisher: ``@asker`` then the rendered template."""
        when = datetime.fromtimestamp(now, UTC)
        ctx = self._context(when)
        ctx.update(
            asker=mention.author_name or mention.author,
            mention={
                "quote": quote(mention.text, self._section.quote_chars),
                "publisher": mention.publisher,
                "author": mention.author,
            },
            mentions=self._inbox.counts(now - 86400.0),
        )
        body = render(reply.text, ctx)
        handle = mention.publisher != ASK_PUBLISHER and HANDLE.match(mention.author)
        prefix = f"@{mention.author} " if handle else ""
        targets = reply.publish_to or (mention.publisher,)
        # Only the mention's own publisher can mention the asker by handle.
        texts = {p: (prefix if p == mention.publisher else "") + body for p in targets}
        # Fitting never cuts inside a mention: the asker's @handle stays whole.
        return {p: fit_text(t, self._caps[p]) if p in self._caps else t for p, t in texts.items()}

    def answer_pending(self, now: float | None = None) -> int:
        """Decide every stored, undecided mention; returns how many were answered.

        Pollers of several services (and MQTT questions) call this from their own
        threads: one at a time, and a mention decided meanwhile is never answered
        twice (the outbox refuses a second reply to it)."""
        with self._answering:
            return self._answer_pending(now)

    def _answer_pending(self, now: float | None) -> int:
        answered = 0
        for mention in self._inbox.undecided():
            t = self._clock() if now is None else now
            try:
                decision = self.decide(mention, t)
            except ComposeError as exc:
                _ratelog.warning(f"reply:{mention.publisher}", "reply not rendered: %s", exc)
                self._inbox.skip(mention, "template error", t)
                continue
            if decision.texts is None or decision.reply is None:
                self._inbox.skip(mention, decision.reason or "no match", t)
                continue
            post = Post(
                id=new_post_id(int(t * 1000)),
                rule=f"reply:{decision.reply.id}",
                created_at=datetime.fromtimestamp(t, UTC),
                text=next(iter(decision.texts.values())),
                lang=decision.reply.language or mention.lang,
                reply=mention.target(),
            )
            fitted = None
            if decision.reply.images and self._attach is not None:
                post, fitted = self._attach(decision.reply, post, tuple(decision.texts))
            try:
                self._outbox.add(
                    post,
                    decision.texts,
                    t,
                    media=fitted,
                    done_mention=(mention.publisher, mention.remote_id),
                )
            except MentionDecidedError:
                continue
            answered += 1
        return answered
