"""Delivery workers: one thread per publisher, draining the outbox in order.

A slow or failing service only ever holds up its own worker.  Each delivery is
marked ``sending`` (committed) before the publisher is called, and ``sent``,
``failed`` (with the next attempt time) or ``dead`` after.  The idempotency key
is derived from the post id and publisher, so a retry after a crash is
recognised by services that support it.  A delivery with ``parts`` (a thread) is
handed to the publisher's ``publish_thread`` (gateway.publishers.threads).
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from gateway.config import PublisherConfig
from gateway.model import PermanentError, PublisherPausedError, RateLimitedError, RetryableError
from gateway.outbox.store import Delivery, Outbox
from gateway.publishers.base import Publisher
from gateway.publishers.threads import publish_thread
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait between attempts, and when to give up."""

    base_delay: float = 5.0
    max_delay: float = 3600.0
    max_attempts: int = 20
    max_age: float = 3 * 86400.0
    jitter: float = 0.2

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts.

        A server's ``Retry-After`` (or rate-limit reset) may lengthen the wait but
        is clamped to [the backoff for this attempt, ``max_delay``]: ``0`` or a
        reset time in the past does not make attempts back to back, and a reset
        decades away does not hold every later post (``give_up_after`` still ends
        a delivery that keeps being refused).
        """
        backoff: float = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        backoff *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is None or not math.isfinite(retry_after):
            return backoff
        return min(self.max_delay, max(float(retry_after), backoff))

    def gives_up(self, attempts: int, age: float) -> bool:
        """True when a delivery has been tried too often or for too long."""
        return attempts >= self.max_attempts or age >= self.max_age

    @classmethod
    def for_publisher(cls, config: PublisherConfig, base: RetryPolicy | None = None) -> RetryPolicy:
        """``base`` (or the defaults) with the publisher's ``max_attempts``/``give_up_after``."""
        base = base or cls()
        return cls(
            base_delay=base.base_delay,
            max_delay=base.max_delay,
            max_attempts=config.max_attempts,
            max_age=config.give_up_after.total_seconds(),
            jitter=base.jitter,
        )


@dataclass(frozen=True, slots=True)
class PostingBudget:
    """How much one publisher may post: per local day, and how often.

    Counted from the outbox's ``sent`` deliveries, so the budget survives restarts.
    """

    tz: tzinfo
    max_per_day: int | None = None
    min_interval: float | None = None

    @classmethod
    def for_publisher(cls, config: PublisherConfig, tz: tzinfo) -> PostingBudget | None:
        """The publisher's budget, or None when it has none."""
        if config.max_per_day is None and config.min_interval is None:
            return None
        interval = config.min_interval.total_seconds() if config.min_interval else None
        return cls(tz, config.max_per_day, interval)

    def day_bounds(self, now: float) -> tuple[float, float]:
        """Epoch seconds of the local midnight starting today and the one ending it."""
        local = datetime.fromtimestamp(now, self.tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        # Add a day on the calendar, then re-localise: DST days are 23 or 25 hours long.
        end = (start.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=self.tz)
        return start.timestamp(), end.timestamp()

    def wait(self, outbox: Outbox, publisher: str, now: float) -> tuple[float, str] | None:
        """``(until, reason)`` when the next post must wait; None when it may go now."""
        start, end = self.day_bounds(now)
        sent_today, last_sent = outbox.sent_since(publisher, start)
        if self.max_per_day is not None and sent_today >= self.max_per_day:
            reset = datetime.fromtimestamp(end, self.tz).isoformat(timespec="minutes")
            return end, f"daily budget of {self.max_per_day} posts used; waiting until {reset}"
        interval = self.min_interval
        if interval is not None and last_sent is not None and now < last_sent + interval:
            return last_sent + interval, f"min_interval {interval:g}s"
        return None


def idempotency_key(post_id: str, publisher: str) -> str:
    """The key sent with every attempt of one post to one publisher."""
    return f"{post_id}-{publisher}"


class DeliveryWorker:
    """Sends one publisher's deliveries, oldest first, retrying with backoff."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        budget: PostingBudget | None = None,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.policy = policy or RetryPolicy()
        self.budget = budget
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._db_log = RateLimitedLog(log)
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failures = 0
        self.busy_since: float | None = None
        """Monotonic time the current step began, None while idle (for the watchdog)."""
        self.paused: str | None = None
        """Why the publisher is paused (a revoked credential) until a reload; None if not."""
        self.on_sent: Callable[[str, str, str], object] | None = None
        """``on_sent(post id, publisher id, url)`` after a delivery with a remote URL (the
        static site links the post there); any thread's worker calls it."""
        self.waiting: tuple[str, float] | None = None
        """``(reason, until)`` while a service's rate limit or cap holds deliveries back."""

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"deliver-{self.publisher.id}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Tell the worker a new delivery may be waiting."""
        self._wake.set()

    def request_stop(self) -> None:
        """Take no further delivery after the one in flight (returns at once)."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the delivery in flight (up to ``timeout``), then stop; True if it stopped."""
        self.request_stop()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        self._thread = None
        return stopped

    def is_alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stalled_for(self) -> float:
        """Seconds the current step has been running (0 when idle): a hang shows here."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        self._prepare()
        while not self._stopping.is_set():
            self.busy_since = time.monotonic()
            try:
                wait = self.step()
            except sqlite3.Error as exc:  # a full disk, a locked or damaged database
                self._db_log.error(
                    "db",
                    "delivery worker %s: database error (retrying): %s",
                    self.publisher.id,
                    exc,
                )
                wait = 5.0
            except Exception:  # the worker must survive anything
                log.exception("delivery worker %s: unexpected error", self.publisher.id)
                wait = 5.0
            finally:
                self.busy_since = None
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def _prepare(self) -> None:
        # Network set-up happens here, in the worker's thread, never in the gateway's start.
        prepare: Callable[[], object] | None = getattr(self.publisher, "prepare", None)
        if prepare is None:
            return
        try:
            prepare()
        except Exception:
            log.exception(
                "publisher %s: preparing failed; will try again when posting", self.publisher.id
            )

    def step(self) -> float:
        """Attempt the next due delivery; return how long to sleep before the next step."""
        delivery = self.outbox.next_delivery(self.publisher.id)
        if delivery is None:
            return 60.0
        now = self._clock()
        if self.paused is not None:
            # Nothing is sent until a reload brings a new credential; give_up_after holds.
            if now - delivery.post.created_at.timestamp() >= self.policy.max_age:
                self._give_up(delivery, f"gave up while the publisher was paused: {self.paused}")
                return 0.0
            return 60.0
        if delivery.next_attempt_at > now:
            return delivery.next_attempt_at - now
        if self.waiting is not None and self.waiting[1] <= now:
            self.waiting = None
        if self.budget is not None:
            held = self.budget.wait(self.outbox, self.publisher.id, now)
            if held is not None:
                return self._hold(delivery, *held)
        self.attempt(delivery)
        return 0.0

    def _hold(self, delivery: Delivery, until: float, reason: str) -> float:
        """Keep a delivery back for the posting budget, without counting an attempt."""
        # Recorded as `failed` with the reason, so `things-gateway outbox` says why it waits.
        self.outbox.mark_failed(delivery, reason, until)
        log.info("post %s to %s held back: %s", delivery.post.id, self.publisher.id, reason)
        return max(0.0, until - self._clock())

    def attempt(self, delivery: Delivery) -> None:
        """Make one publish call for ``delivery`` and record its outcome."""
        self.outbox.mark_sending(delivery)
        attempts = delivery.attempts + 1
        key = idempotency_key(delivery.post.id, delivery.publisher)
        try:
            if len(delivery.parts) > 1:
                receipt = publish_thread(
                    self.publisher, delivery.post, delivery.parts, delivery.media_to_send, key
                )
            else:
                receipt = self.publisher.publish(
                    delivery.post, delivery.text, delivery.media_to_send, key
                )
        except PermanentError as exc:
            self._give_up(delivery, f"permanent: {exc}")
            return
        except RateLimitedError as exc:
            self._wait(delivery, str(exc), self._clock() + max(exc.wait, self.policy.base_delay))
            return
        except PublisherPausedError as exc:
            self._pause(delivery, str(exc))
            return
        except RetryableError as exc:
            self._failed(delivery, attempts, str(exc), exc.retry_after)
            return
        except Exception as exc:  # a publisher bug: keep the post and retry later
            log.exception("publisher %s raised unexpectedly", self.publisher.id)
            self._failed(delivery, attempts, f"{type(exc).__name__}: {exc}", None)
            return
        self.outbox.mark_sent(delivery, receipt)
        self.waiting = None
        self.sent += 1
        if self.on_sent is not None and receipt.url:
            try:
                self.on_sent(delivery.post.id, self.publisher.id, receipt.url)
            except Exception:  # the delivery is done whatever a listener does
                log.exception("after post %s sent to %s", delivery.post.id, self.publisher.id)
        log.info(
            "post %s sent to %s%s",
            delivery.post.id,
            self.publisher.id,
            f" ({receipt.url})" if receipt.url else "",
        )

    def _failed(
        self, delivery: Delivery, attempts: int, error: str, retry_after: float | None
    ) -> None:
        self.failures += 1
        age = self._clock() - delivery.post.created_at.timestamp()
        if self.policy.gives_up(attempts, age):
            self._give_up(delivery, f"gave up after {attempts} attempts: {error}")
            return
        delay = self.policy.delay(attempts, retry_after)
        log.warning(
            "post %s to %s failed (attempt %d), retrying in %.0fs: %s",
            delivery.post.id,
            self.publisher.id,
            attempts,
            delay,
            error,
        )
        self.outbox.mark_failed(delivery, error, self._clock() + delay)

    def _wait(self, delivery: Delivery, reason: str, until: float) -> None:
        """A service's cap: wait until it resets, without counting the attempt."""
        if until - delivery.post.created_at.timestamp() >= self.policy.max_age:
            self._give_up(delivery, f"gave up: {reason} (past give_up_after)")
            return
        at = datetime.fromtimestamp(until).astimezone().isoformat(timespec="minutes")
        reason = f"waiting until {at}: {reason}"
        if self.waiting is None or self.waiting[0] != reason:
            log.warning("post %s to %s %s", delivery.post.id, self.publisher.id, reason)
        self.waiting = (reason, until)
        self.outbox.mark_waiting(delivery, reason, until)

    def _pause(self, delivery: Delivery, reason: str) -> None:
        """A credential the service refuses: stop posting until a reload (logged once)."""
        if self.paused is None:
            log.error(
                "publisher %s paused until a reload with a new credential: %s",
                self.publisher.id,
                reason,
            )
        self.paused = reason
        self.outbox.mark_waiting(delivery, f"paused: {reason}", self._clock())

    def _give_up(self, delivery: Delivery, error: str) -> None:
        self.failures += 1
        log.error("post %s to %s is dead: %s", delivery.post.id, self.publisher.id, error)
        self.outbox.mark_dead(delivery, error)
