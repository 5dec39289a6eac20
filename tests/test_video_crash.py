"""A SIGKILL in the middle of X's chunked video upload, and another while the post's
answer is on its way: after restarts the post is on X exactly once, with its video.

The gateway runs as a subprocess; the fake X (in this process) holds its answer to
the APPEND of the first attempt (the segment has arrived) while the gateway is
killed, then holds the answer to ``POST /2/tweets`` (the tweet exists) while it is
killed again.  The third run must finish the delivery without a second tweet.
"""

from __future__ import annotations

import signal
import sqlite3
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config
from tests.fakes.backends import X_KEYS
from tests.fakes.server import Fault
from tests.fakes.x import FakeX
from tests.gwutil import base_config, wait_until
from tests.mediautil import scene_jpeg
from tests.test_crash_exactly_once import open_deliveries, start


@pytest.fixture
def x_server() -> Iterator[FakeX]:
    with FakeX(X_KEYS) as fake:
        fake.processing_checks = 1
        yield fake


def config_text(broker: Broker, state: Path, x: FakeX) -> str:
    keys = "".join(f'{k} = "{v}"\n' for k, v in X_KEYS.items())
    return (
        base_config(broker, state, name="videogw")
        + f"""
[[cameras]]
id = "pool"
topic = "videogw/cam"

[[rules]]
id = "lapse"
every = "1s"
max_per_day = 1
text = "The pool today"
publish_to = ["x"]

[rules.timelapse]
camera = "pool"
window = "2h"
frames = 8
format = "mp4"
alt = "The pool, sped up"

[[publishers]]
id = "x"
type = "x"
api_base = "{x.url}"
timeout = 5
{keys}"""
    )


def tweets_with_video(x: FakeX) -> list[dict[str, object]]:
    return [t for t in x.tweets.values() if t["media_ids"]]


@pytest.mark.slow
def test_sigkill_during_chunked_upload_posts_exactly_once(
    broker: Broker, x_server: FakeX, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    text = config_text(broker, state, x_server)
    config = tmp_path / "gw.toml"
    config.write_text(text, encoding="utf-8")
    seeding = Gateway(validate_config(tomllib.loads(text)))
    now = datetime.now(UTC)
    for k in range(8, 0, -1):
        at = now - timedelta(minutes=10 * k)
        seeding.frames.store("pool", scene_jpeg(at, (320, 240)), at)
    seeding.outbox.close()
    log = tmp_path / "gateway.log"

    # 1: killed while its APPEND is in: INIT passes, the APPEND's answer is held
    x_server.fail_next(Fault("slow", delay=0.0, path="/2/media/upload"))
    x_server.fail_next(Fault("stall", delay=60, path="/2/media/upload"))
    process = start(config, log)
    wait_until(
        lambda: any(
            r.parts and r.part("command").text == "APPEND"
            for r in x_server.calls("/2/media/upload", "POST")
        ),
        60,
    )
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert x_server.tweets == {}

    # 2: killed after X created the tweet, before the gateway heard of it
    x_server.fail_next(Fault("stall", delay=60, path="/2/tweets"))
    process = start(config, log)
    wait_until(lambda: len(x_server.tweets) == 1, 60)
    process.send_signal(signal.SIGKILL)
    process.wait(10)

    # 3: drains
    process = start(config, log)
    try:
        wait_until(lambda: open_deliveries(state / "gateway.db") == 0, timeout=60, interval=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, output[-3000:]
    for secret in X_KEYS.values():
        assert secret not in output

    (tweet,) = x_server.tweets.values()  # exactly once
    assert tweet["text"] == "The pool today"
    (media_id,) = tweet["media_ids"]  # type: ignore[misc]
    assert x_server.chunked[media_id]["frames"] == 8
    assert x_server.media[media_id]["category"] == "tweet_video"
    inits = [
        r for r in x_server.calls("/2/media/upload", "POST") if r.part("command").text == "INIT"
    ]
    assert len(inits) == 3  # each attempt uploads anew (a killed upload is not resumed)
    with sqlite3.connect(state / "gateway.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == 1
        assert conn.execute("SELECT status FROM deliveries").fetchall() == [("sent",)]
