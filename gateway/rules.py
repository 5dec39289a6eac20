"""Rules: what happens when a rule fires.

A firing composes the post, fits its text to every target publisher and
commits the post with its deliveries to the outbox, then wakes the delivery
workers.  Nothing here talks to the network.  Failures are counted and logged;
a rule that fails simply posts nothing this time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gateway.compose import ComposeError, Composer, PostSkippedError
from gateway.config import GatewayConfig
from gateway.model import Post
from gateway.outbox import Outbox
from gateway.publishers.base import Capabilities
from gateway.textfit import fit_text

log = logging.getLogger(__name__)


@dataclass
class RuleStats:
    """Per-rule counters."""

    fired: int = 0
    posted: int = 0
    failed: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_post_id: str | None = None


def fitted_texts(post: Post, targets: Mapping[str, Capabilities]) -> dict[str, str]:
    """The post's text fitted to each target publisher's limits."""
    return {pid: fit_text(post.text, caps) for pid, caps in targets.items()}


@dataclass
class RuleRunner:
    """Fires rules: compose → fit → commit to the outbox → wake workers."""

    config: GatewayConfig
    composer: Composer
    outbox: Outbox
    capabilities: Mapping[str, Capabilities]
    wake: Callable[[str], None]
    clock: Callable[[], datetime]
    stats: dict[str, RuleStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fire(self, rule_id: str) -> Post | None:
        """Fire one rule now; the stored post, or None when it failed."""
        rule = self.config.rule(rule_id)
        with self._lock:
            stats = self.stats.setdefault(rule_id, RuleStats())
            stats.fired += 1
        targets = {
            pid: self.capabilities[pid] for pid in rule.publish_to if pid in self.capabilities
        }
        try:
            post = self.composer.compose(rule, self.clock(), targets)
            media = self.composer.fit_media(post, targets)
            self.outbox.add(post, fitted_texts(post, targets), media=media)
        except PostSkippedError as exc:
            stats.skipped += 1
            log.warning("rule %s: no post this time: %s", rule_id, exc)
            return None
        except ComposeError as exc:
            self._failed(stats, rule_id, str(exc))
            return None
        except Exception as exc:  # a broken rule must not take the scheduler down
            log.exception("rule %s: unexpected error", rule_id)
            self._failed(stats, rule_id, f"{type(exc).__name__}: {exc}")
            return None
        stats.posted += 1
        stats.last_post_id = post.id
        log.info("rule %s: post %s queued for %s", rule_id, post.id, ", ".join(targets))
        for pid in targets:
            self.wake(pid)
        return post

    def _failed(self, stats: RuleStats, rule_id: str, error: str) -> None:
        stats.failed += 1
        stats.last_error = error
        log.error("rule %s: no post: %s", rule_id, error)
