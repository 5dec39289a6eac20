"""Every HTTP backend through the DeliveryWorker, with faults injected by its fake.

One table-driven runner: for each backend and each fault, two posts go through a
real outbox and a real worker (on a fake clock, so waits cost no time), and the
test checks where each delivery ended (`sent` or `dead`), that the server's
rate-limit answer was honoured, and — on the fake's side — that every sent post
was *created* exactly once and a dead one not at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Post, new_post_id
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, PublisherContext
from gateway.runtime.loading import validate_config
from tests.fakeclock import EpochClock, drain
from tests.fakes.backends import HTTP_BACKENDS, SECRETS, Backend
from tests.fakes.server import FakeServer, Fault, Reply

TIMEOUT = 0.5


@dataclass(frozen=True)
class Case:
    """A fault, how many times it strikes the create request, and the expected end."""

    name: str
    times: int = 1
    dead: bool = False
    """True when the first post must end `dead` (and never be created)."""

    def inject(self, fake: FakeServer, backend: Backend) -> None:
        path = backend.create_path
        faults = {
            "429": Fault(
                "reply",
                Reply(429, {"error": "Too many requests"}, backend.rate_limit_headers(time.time())),
                path=path,
            ),
            "500": Fault("reply", Reply(500, {"error": "boom"}), path=path),
            "500-forever": Fault("reply", Reply(500, {"error": "boom"}), path=path),
            "503-then-401": Fault("reply", Reply(503, {"error": "busy"}), path=path),
            "timeout": Fault("slow", delay=TIMEOUT * 3, path=path),
            "answer-lost-after-timeout": Fault("stall", delay=TIMEOUT * 3, path=path),
            "reset": Fault("reset", path=path),
            "reset-after-processing": Fault("reset_after", path=path),
            "401": Fault(
                "reply",
                Reply(401, {"error": "AuthenticationRequired", "message": "Invalid token"}),
                path=path,
            ),
        }
        fake.fail_next(faults[self.name], self.times)
        if self.name == "503-then-401":
            fake.fail_next(faults["401"])


CASES = (
    Case("429"),
    Case("500", times=3),
    Case("timeout"),
    Case("answer-lost-after-timeout"),
    Case("reset", times=2),
    Case("reset-after-processing"),
    Case("401", dead=True),
    Case("503-then-401", dead=True),
    Case("500-forever", times=5, dead=True),
)


def _expects_dead(case: Case, backend: Backend) -> bool:
    if case.name in ("401", "503-then-401"):
        return backend.dead_on_401
    return case.dead


@pytest.fixture(params=HTTP_BACKENDS, ids=lambda b: b.type)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
def fake(backend: Backend) -> Iterator[Any]:
    pytest.importorskip("apprise") if backend.type == "apprise" else None
    with backend.make_fake() as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fault_ends_sent_or_dead_never_lost_never_doubled(
    backend: Backend, fake: Any, case: Case, tmp_path: Path
) -> None:
    if not backend.idempotent and case.name in (
        "answer-lost-after-timeout",
        "reset-after-processing",
    ):
        pytest.skip(f"{backend.type} has no idempotency: a lost answer can notify twice")
    entry = {"id": "svc", "timeout": TIMEOUT, **backend.config(fake)}
    (config,) = validate_config({"publishers": [entry]}).publishers
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool", store=MemoryStore()))
    outbox = Outbox(tmp_path / "gateway.db")
    posts = [Post(new_post_id(), "r", datetime.now(UTC), f"post {n}", (), "en") for n in range(2)]
    for n, post in enumerate(posts):
        outbox.add(post, {"svc": f"post {n} #{post.id}"})
    clock = EpochClock()
    policy = RetryPolicy(base_delay=2, max_attempts=5, jitter=0)
    worker = DeliveryWorker(outbox, publisher, policy, clock=clock)
    case.inject(fake, backend)
    try:
        waits = drain(worker, outbox, clock, "svc")
    finally:
        publisher.close()
        outbox_history = outbox.history(10)
        outbox.close()

    deliveries = {e["id"]: e["deliveries"]["svc"] for e in outbox_history}
    created = backend.created_texts(fake)
    first, second = posts
    dead = _expects_dead(case, backend)
    assert deliveries[first.id]["status"] == ("dead" if dead else "sent")
    assert deliveries[second.id]["status"] == "sent"  # one bad post never blocks the next
    assert sum(first.id in text for text in created) == (0 if dead else 1)
    assert sum(second.id in text for text in created) == 1
    assert len(created) == (1 if dead else 2)
    assert not fake.errors
    if case.name == "429" and backend.sees_rate_limits:
        assert waits[0] >= 25  # the service's reset time, not the 2 s backoff
    for d in deliveries.values():
        for secret in SECRETS:
            assert secret not in (d["last_error"] or "")
