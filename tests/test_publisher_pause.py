"""A revoked Bluesky app password pauses that publisher until a reload (issue 16, item 9).

The real daemon posts to a fake PDS on 127.0.0.1: the PDS refuses the login, the
deliveries wait (no attempt counted, nothing dead), the pause is logged once and shown by
``status`` and ``outbox``; after the config gets the new app password and a SIGHUP, the
waiting posts go out by themselves.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from gateway.model import Post, new_post_id
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import MemoryStore, PublisherContext
from gateway.publishers.bluesky import BlueskyConfig
from tests.fakeclock import EpochClock
from tests.fakes.bluesky import FakePds
from tests.gwutil import base_config, cli, start_gateway, wait_until

OLD_PASSWORD = "revoked-app-pass-1111"
NEW_PASSWORD = "new-app-pass-2222"


@pytest.fixture
def pds() -> Iterator[FakePds]:
    with FakePds("poolcam.test", NEW_PASSWORD) as fake:
        yield fake


def tick_config(path: Path, broker: Broker, state: Path, publisher: str) -> Path:
    """A config whose rule ``tick`` posts every 2 s to its one publisher (``publisher``:
    the keys of its ``[[publishers]]`` table, ``id`` first), health written every second."""
    path.write_text(
        base_config(broker, state)
        + f"""
[health]
interval = "1s"

[[rules]]
id = "tick"
every = "2s"
text = "Pool tick {{{{ now.strftime('%H:%M:%S') }}}}"
publish_to = [{publisher.splitlines()[0].split("=")[1].strip()}]

[[publishers]]
{publisher}
""",
        encoding="utf-8",
    )
    return path


def write_config(path: Path, broker: Broker, state: Path, pds: FakePds, password: str) -> Path:
    return tick_config(
        path,
        broker,
        state,
        f"""id = "sky"
type = "bluesky"
handle = "poolcam.test"
app_password = "{password}"
service = "{pds.url}"
timeout = 3""",
    )


def test_a_revoked_app_password_pauses_until_a_reload(
    broker: Broker, tmp_path: Path, pds: FakePds
) -> None:
    state = tmp_path / "state"
    path = write_config(tmp_path / "gw.toml", broker, state, pds, OLD_PASSWORD)
    gateway = start_gateway(path)
    try:

        def paused() -> str | None:
            out = cli("status", "-c", str(path)).stdout
            return out if "PAUSED" in out else None

        status = wait_until(paused, timeout=30, interval=0.5)
        # more posts arrive while paused: they wait, nothing is attempted or given up
        wait_until(lambda: cli("outbox", "-c", str(path)).stdout.count("sky ") >= 3, timeout=30)
        outbox = cli("outbox", "-c", str(path)).stdout
        assert "dead" not in outbox
        assert "attempts=0" in outbox
        assert "paused: bluesky: the PDS refused the login" in outbox
        logins_while_paused = len(pds.calls("createSession"))

        write_config(path, broker, state, pds, NEW_PASSWORD)
        gateway.send_signal(signal.SIGHUP)
        wait_until(lambda: len(pds.records) >= 3, timeout=30)
        resumed = wait_until(
            lambda: (out := cli("status", "-c", str(path)).stdout) and "PAUSED" not in out and out,
            timeout=30,
            interval=0.5,
        )
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert "sky: " in status
    assert "PAUSED until a reload with a new credential" in status
    assert "PAUSED" not in resumed
    assert logins_while_paused == 1  # paused: no login per post
    assert err.count("publisher sky paused") == 1  # logged once
    assert OLD_PASSWORD not in err
    assert NEW_PASSWORD not in err


def test_paused_deliveries_wait_without_attempts_until_give_up_after(
    tmp_path: Path, pds: FakePds
) -> None:
    config = BlueskyConfig.model_validate(
        {
            "id": "sky",
            "type": "bluesky",
            "handle": "poolcam.test",
            "app_password": OLD_PASSWORD,
            "service": pds.url,
        }
    )
    publisher = build_publisher(config, PublisherContext(tmp_path, "pool", store=MemoryStore()))
    outbox = Outbox(tmp_path / "gateway.db")
    for n in range(2):
        post = Post(new_post_id(), "r", datetime.now(UTC), f"tick {n}", (), "en")
        outbox.add(post, {"sky": post.text})
    clock = EpochClock()
    clock.now += 1
    worker = DeliveryWorker(outbox, publisher, RetryPolicy(max_age=3600, jitter=0), clock=clock)
    worker.step()  # the login is refused: paused
    assert worker.paused is not None
    for _ in range(5):
        clock.now += worker.step()  # paused: nothing is tried
    assert len(pds.calls("createSession")) == 1
    assert {d["status"] for e in outbox.history(5) for d in e["deliveries"].values()} == {
        "failed",
        "pending",
    }
    clock.now += 3600  # past give_up_after
    for _ in range(3):
        worker.step()
    publisher.close()
    deliveries = [e["deliveries"]["sky"] for e in outbox.history(5)]
    outbox.close()
    assert [d["status"] for d in deliveries] == ["dead", "dead"]
    assert all(d["attempts"] == 0 for d in deliveries)
    assert all("paused" in str(d["last_error"]) for d in deliveries)
