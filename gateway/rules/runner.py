"""Rules: what happens when a rule fires.

A firing checks the rule's guards (quiet hours, max_per_day, cooldown,
require_fresh), composes the post, skips it when it repeats the rule's previous
post within ``dedupe_window``, fits its text to every target publisher (shortened,
or split into a thread with ``overflow = "thread"``) and commits the post with its
deliveries to the outbox, then wakes the delivery workers.  Nothing here talks to
the network.  Failures are counted and logged; a rule that fails posts nothing.

One firing of a rule runs at a time (a per-rule lock), so two firings cannot both
pass a cooldown check.  Past posts come from the outbox, so guards survive a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from gateway.compose.composer import ComposeError, Composer, MessageEvent, PostSkippedError
from gateway.compose.textfit import fit_text, split_thread
from gateway.config import GatewayConfig, RuleConfig
from gateway.model import Capabilities, MediaItem, Post
from gateway.outbox.store import Outbox
from gateway.rules.guards import (
    Decision,
    Guards,
    PostHistory,
    decide,
    is_duplicate,
    local_midnight,
    parse_quiet_hours,
)
from gateway.state.store import SensorSnapshot
from gateway.support.ratelog import RateLimitedLog, known_failure

log = logging.getLogger(__name__)

THREAD_NUMBERING = " {i}/{n}"


@dataclass
class RuleStats:
    """Per-rule counters."""

    fired: int = 0
    posted: int = 0
    failed: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    failing_since: datetime | None = None
    """The first failure since the rule last posted, or None."""
    last_skip: str | None = None
    last_post_id: str | None = None
    last_post_at: datetime | None = None

    @property
    def failing(self) -> bool:
        """True when the rule failed and has not posted since."""
        return self.failing_since is not None


@dataclass(frozen=True)
class FittedPost:
    """A post's text per publisher; ``threads`` holds the parts when a text became a thread."""

    texts: dict[str, str]
    threads: dict[str, list[str]]


def fit_post(post: Post, targets: Mapping[str, Capabilities], overflow: str) -> FittedPost:
    """Fit the post's text to each target: shorten it, or (``thread``) split it."""
    texts: dict[str, str] = {}
    threads: dict[str, list[str]] = {}
    for pid, caps in targets.items():
        if overflow == "thread":
            try:
                parts = split_thread(post.text, caps, numbering=THREAD_NUMBERING)
            except ValueError:
                parts = [fit_text(post.text, caps)]
            texts[pid] = parts[0]
            if len(parts) > 1:
                threads[pid] = parts
        else:
            texts[pid] = fit_text(post.text, caps)
    return FittedPost(texts, threads)


def video_fallback(
    rule: RuleConfig,
    post: Post,
    targets: Mapping[str, Capabilities],
    media: Mapping[str, tuple[MediaItem, ...]],
) -> tuple[dict[str, Capabilities], dict[str, Post]]:
    """Apply the rule's ``video_fallback`` to the publishers a post's video cannot go
    to (they got its poster frame instead): drop them (``skip``), or give them the
    post with ``video_note`` below its text.  Returns the targets that remain and, per
    publisher, the post whose text it gets."""
    posts = dict.fromkeys(targets, post)
    if not any(item.is_video for item in post.media):
        return dict(targets), posts
    poster_only = [pid for pid in targets if not any(m.is_video for m in media.get(pid, ()))]
    if rule.video_fallback == "skip":
        for pid in poster_only:
            log.info("rule %s: %s takes no video: no post there (video_fallback)", rule.id, pid)
        return {p: c for p, c in targets.items() if p not in poster_only}, {
            p: posts[p] for p in targets if p not in poster_only
        }
    if rule.video_note:
        noted = replace(post, text=f"{post.text}\n\n{rule.video_note}")
        posts.update(dict.fromkeys(poster_only, noted))
    return dict(targets), posts


def fit_posts(
    posts: Mapping[str, Post], targets: Mapping[str, Capabilities], overflow: str
) -> FittedPost:
    """:func:`fit_post` for a post that differs per publisher (``posts``: id → post)."""
    texts: dict[str, str] = {}
    threads: dict[str, list[str]] = {}
    for pid, caps in targets.items():
        one = fit_post(posts[pid], {pid: caps}, overflow)
        texts.update(one.texts)
        threads.update(one.threads)
    return FittedPost(texts, threads)


def fitted_texts(post: Post, targets: Mapping[str, Capabilities]) -> dict[str, str]:
    """The post's text fitted (shortened) to each target publisher's limits."""
    return fit_post(post, targets, "shorten").texts


def guards_of(rule: RuleConfig) -> Guards:
    """A rule's guard settings, parsed."""
    return Guards(
        cooldown=rule.cooldown,
        max_per_day=rule.max_per_day,
        quiet_hours=parse_quiet_hours(rule.quiet_hours) if rule.quiet_hours else None,
        require_fresh=rule.require_fresh,
        has_fallback=rule.fallback_text is not None,
    )


@dataclass
class RuleRunner:
    """Fires rules: guards → compose → dedupe → fit → commit to the outbox → wake workers."""

    config: GatewayConfig
    composer: Composer
    outbox: Outbox
    capabilities: Mapping[str, Capabilities]
    wake: Callable[[str], None]
    clock: Callable[[], datetime]
    stats: dict[str, RuleStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rule_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _ratelog: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))

    def fire(
        self,
        rule_id: str,
        event: MessageEvent | None = None,
        readings: Mapping[str, SensorSnapshot] | None = None,
        *,
        firing: int | None = None,
    ) -> Post | None:
        """Fire one rule now; the stored post, or None when skipped or failed.

        ``event`` is the message of an ``on_message`` rule; ``readings`` the sensor
        values when an event rule's condition was met (else the current state is used);
        ``firing`` the queued firing (:mod:`gateway.rules.firings`) marked done with the post.
        """
        rule = self.config.rule(rule_id)
        with self._lock:
            stats = self.stats.setdefault(rule_id, RuleStats())
            stats.fired += 1
            rule_lock = self._rule_locks.setdefault(rule_id, threading.Lock())
        with rule_lock:
            try:
                return self._fire(rule, stats, event, readings, firing)
            except PostSkippedError as exc:
                self._skipped(stats, rule_id, str(exc))
            except ComposeError as exc:
                self._failed(stats, rule_id, str(exc))
            except Exception as exc:  # a broken rule must not take the scheduler down
                known = known_failure(exc)
                if known is None:
                    log.exception("rule %s: unexpected error", rule_id)
                self._failed(stats, rule_id, known or f"{type(exc).__name__}: {exc}")
            return None

    def _fire(
        self,
        rule: RuleConfig,
        stats: RuleStats,
        event: MessageEvent | None,
        readings: Mapping[str, SensorSnapshot] | None,
        firing: int | None = None,
    ) -> Post | None:
        now = self.clock()
        recent = self.outbox.recent_posts(rule.id, rule.max_per_day or 1)
        decision = self._decide(rule, now, recent)
        if decision.skip is not None:
            self._skipped(stats, rule.id, decision.skip)
            return None
        targets = {
            pid: self.capabilities[pid] for pid in rule.publish_to if pid in self.capabilities
        }
        post = self.composer.compose(
            rule, now, targets, event=event, use_fallback=decision.use_fallback, readings=readings
        )
        previous_at, previous_text = recent[0] if recent else (None, None)
        if is_duplicate(post.text, now, previous_text, previous_at, rule.dedupe_window):
            self._skipped(stats, rule.id, "same text as the previous post")
            return None
        media = self.composer.fit_media(post, targets)
        targets, posts = video_fallback(rule, post, targets, media)
        if not targets:
            self._skipped(stats, rule.id, "no publisher takes the video (video_fallback)")
            return None
        fitted = fit_posts(posts, targets, rule.overflow)
        media = {pid: media[pid] for pid in targets}
        self.outbox.add(post, fitted.texts, media=media, threads=fitted.threads, done_firing=firing)
        stats.posted += 1
        stats.last_post_id = post.id
        stats.last_post_at = now
        stats.failing_since = None
        log.info("rule %s: post %s queued for %s", rule.id, post.id, ", ".join(targets))
        for pid in targets:
            self.wake(pid)
        return post

    def _decide(
        self, rule: RuleConfig, now: datetime, recent: list[tuple[datetime, str]]
    ) -> Decision:
        tz = self.config.gateway.tz
        midnight = local_midnight(now, tz)
        history = PostHistory(
            last_post_at=recent[0][0] if recent else None,
            posts_today=sum(1 for at, _ in recent if at >= midnight),
        )
        stale = frozenset(s for s in rule.require_fresh if self.composer.is_stale(s, now))
        return decide(guards_of(rule), now, tz, history, stale)

    def _skipped(self, stats: RuleStats, rule_id: str, reason: str) -> None:
        stats.skipped += 1
        stats.last_skip = reason
        log.info("rule %s: no post: %s", rule_id, reason)

    def _failed(self, stats: RuleStats, rule_id: str, error: str) -> None:
        stats.failed += 1
        stats.last_error = error
        stats.last_error_at = self.clock()
        if stats.failing_since is None:
            stats.failing_since = stats.last_error_at
        # The same failure on every firing (a full disk): one line a minute, with a count.
        key = f"failed:{rule_id}:{error[:60]}"
        self._ratelog.error(key, "rule %s: no post: %s", rule_id, error)
