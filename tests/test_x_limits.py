"""X: duplicate refusals, 24-hour caps and GIF uploads as X does them (issue 16, items 3-5).

The fake X (tests/fakes/x.py) verifies every OAuth 1.0a signature with oauthlib, refuses
a repeated text with the documented 403 "duplicate content", sends the 15-minute and
24-hour limit headers counting down, and speaks the chunked upload
(INIT/APPEND/FINALIZE/STATUS).  Deliveries go through the real DeliveryWorker and a
real outbox in SQLite.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from gateway.demo.broker import Broker
from gateway.model import MediaItem, Post, new_post_id
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, PublisherContext
from gateway.publishers.x import XConfig, XPublisher
from tests.fakeclock import EpochClock, drain
from tests.fakes import Fault
from tests.fakes.x import FakeX
from tests.gwutil import cli, start_gateway, wait_until
from tests.test_publisher_pause import tick_config
from tests.test_publisher_x import KEYS


@pytest.fixture
def server() -> Iterator[FakeX]:
    with FakeX(KEYS) as fake:
        yield fake


def publisher(server: FakeX, tmp_path: Path) -> XPublisher:
    config = XConfig.model_validate(
        {"id": "x", "type": "x", "api_base": server.url, "timeout": 2, **KEYS}
    )
    ctx = PublisherContext(state_dir=tmp_path, gateway_name="pool", store=MemoryStore())
    built = build_publisher(config, ctx)
    assert isinstance(built, XPublisher)
    return built


def worker_for(
    server: FakeX, tmp_path: Path, clock: EpochClock, **policy: float
) -> tuple[DeliveryWorker, Outbox]:
    outbox = Outbox(tmp_path / "gateway.db")
    retry = RetryPolicy(base_delay=2, max_attempts=3, jitter=0, **policy)  # type: ignore[arg-type]
    return DeliveryWorker(outbox, publisher(server, tmp_path), retry, clock=clock), outbox


def add(outbox: Outbox, text: str, parts: tuple[str, ...] | None = None) -> Post:
    post = Post(new_post_id(), "r", datetime.now(UTC), text, (), "en")
    if parts is None:
        outbox.add(post, {"x": text})
    else:
        outbox.add(post, {"x": text}, threads={"x": parts})
    return post


def deliveries(outbox: Outbox) -> dict[str, dict[str, object]]:
    return {e["id"]: e["deliveries"]["x"] for e in outbox.history(20)}


def run(worker: DeliveryWorker, outbox: Outbox, clock: EpochClock) -> dict[str, dict[str, object]]:
    """Deliver everything, close up, and return each post's delivery."""
    drain(worker, outbox, clock, "x")
    worker.publisher.close()
    found = deliveries(outbox)
    outbox.close()
    return found


def test_a_text_already_on_the_account_is_dead_not_sent(server: FakeX, tmp_path: Path) -> None:
    clock = EpochClock()
    worker, outbox = worker_for(server, tmp_path, clock)
    first, second = add(outbox, "Water 24 °C"), add(outbox, "Water 24 °C")
    found = run(worker, outbox, clock)
    assert found[first.id]["status"] == "sent"
    assert found[second.id]["status"] == "dead"
    assert "duplicate content" in str(found[second.id]["last_error"])
    assert found[second.id]["remote_id"] is None
    assert len(server.tweets) == 1


def test_a_duplicate_after_a_lost_answer_is_sent(server: FakeX, tmp_path: Path) -> None:
    clock = EpochClock()
    worker, outbox = worker_for(server, tmp_path, clock)
    post = add(outbox, "Water 25 °C")
    server.fail_next(Fault("reset_after", path="/2/tweets"))  # posted, answer lost
    found = run(worker, outbox, clock)
    assert found[post.id]["status"] == "sent"
    assert len(server.tweets) == 1


def test_a_thread_repeating_an_earlier_threads_parts_is_dead(server: FakeX, tmp_path: Path) -> None:
    clock = EpochClock()
    worker, outbox = worker_for(server, tmp_path, clock)
    earlier = add(outbox, "A B C", ("part A 1/3", "part B 2/3", "part C 3/3"))
    later = add(outbox, "A2 B C", ("part A2 1/3", "part B 2/3", "part C 3/3"))
    found = run(worker, outbox, clock)
    assert found[earlier.id]["status"] == "sent"
    assert found[later.id]["status"] == "dead"
    assert "duplicate content" in str(found[later.id]["last_error"])
    assert len(server.tweets) == 4  # three parts, then only the new first part


@pytest.mark.parametrize("cap", ["user", "app"])
def test_a_used_up_24_hour_cap_waits_for_its_reset_without_spending_attempts(
    server: FakeX, tmp_path: Path, cap: str
) -> None:
    clock = EpochClock()
    setattr(server, f"{cap}_cap", 2)
    server.cap_reset = int(time.time()) + 20 * 3600
    worker, outbox = worker_for(server, tmp_path, clock)
    posts = [add(outbox, f"post {n}") for n in range(5)]
    clock.now = time.time() + 1
    for _ in range(3):
        worker.step()  # two go out, the third meets the cap
    found = deliveries(outbox)
    waiting = found[posts[2].id]
    assert waiting["status"] == "failed"
    assert waiting["attempts"] == 0  # the wait is no failed attempt
    assert f"{cap} 24-hour cap" in str(waiting["last_error"])
    assert "waiting until" in str(waiting["last_error"])
    assert worker.waiting is not None
    assert abs(worker.waiting[1] - server.cap_reset) < 5  # the cap's own reset, not minutes
    # Until the reset, nothing is tried again: the next step sleeps until then.
    assert worker.step() == pytest.approx(server.cap_reset - clock.now, abs=5)
    assert len(server.calls("/2/tweets")) == 3
    clock.now = server.cap_reset + 1
    setattr(server, f"{cap}_cap", None)  # a new day
    drain(worker, outbox, clock, "x")
    worker.publisher.close()
    found = deliveries(outbox)
    outbox.close()
    assert all(found[p.id]["status"] == "sent" for p in posts)
    assert found[posts[2].id]["attempts"] == 1


def test_a_gif_goes_through_the_chunked_upload_as_tweet_gif(server: FakeX, tmp_path: Path) -> None:
    frames = [Image.new("RGB", (60, 40), (n * 60, 120, 200 - n * 60)) for n in range(3)]
    path = tmp_path / "timelapse.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    item = MediaItem(path, "image/gif", 60, 40, path.stat().st_size, "Pool, last hour")
    post = Post(new_post_id(), "r", datetime.now(UTC), "Timelapse", (item,), "en")
    x = publisher(server, tmp_path)
    x._sleep = lambda seconds: None
    receipt = x.publish(post, "Timelapse", (item,), "k")
    x.close()
    commands = [
        (r.method, r.part("command").text if r.method == "POST" else r.query["command"][0])
        for r in server.calls("/2/media/upload")
    ]
    assert commands == [
        ("POST", "INIT"),
        ("POST", "APPEND"),
        ("POST", "FINALIZE"),
        ("GET", "STATUS"),
        ("GET", "STATUS"),
        ("GET", "STATUS"),
    ]
    init = server.calls("/2/media/upload")[0]
    assert init.part("media_category").text == "tweet_gif"
    assert init.part("media_type").text == "image/gif"
    assert int(init.part("total_bytes").text) == path.stat().st_size
    (media_id,) = server.media
    assert server.chunked[media_id]["frames"] == 3  # the animation arrived whole
    assert server.media[media_id]["alt"] == "Pool, last hour"
    assert server.tweets[str(receipt.remote_id)]["media_ids"] == [media_id]
    assert server.signature_failures == 0


def test_status_and_outbox_show_the_wait_for_a_daily_cap(
    broker: Broker, tmp_path: Path, server: FakeX
) -> None:
    server.user_cap = 0  # the day's posts are used up
    state = tmp_path / "state"
    keys = "\n".join(f'{k} = "{v}"' for k, v in KEYS.items())
    path = tick_config(
        tmp_path / "gw.toml",
        broker,
        state,
        f'id = "x"\ntype = "x"\napi_base = "{server.url}"\n{keys}',
    )
    gateway = start_gateway(path)
    try:
        status = wait_until(
            lambda: (out := cli("status", "-c", str(path)).stdout) and "24-hour cap" in out and out,
            timeout=30,
            interval=0.5,
        )
        outbox = cli("outbox", "-c", str(path)).stdout
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert "waiting until" in status
    assert "user 24-hour cap" in outbox
    assert "attempts=0" in outbox
    assert len(server.calls("/2/tweets")) == 1  # one refusal, then it waits for the reset
    for secret in KEYS.values():
        assert secret not in err
