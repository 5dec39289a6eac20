"""Repeated failures log one line a minute with a count, never one line (or a
traceback) per message: bursts of events, a full disk, deeply nested JSON.

The real daemon against the session's mosquitto; the full disk is a small tmpfs
(skipped where this machine cannot mount one).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from tests.gwutil import (
    StderrLines,
    archive_posts,
    base_config,
    fill,
    publish,
    start_gateway,
    tmpfs,
    wait_until,
)

EVENTS = """
[[rules]]
id = "ev"
on_message = {{ topic = "{prefix}/events" }}
text = "event {{{{ event }}}}"
publish_to = ["archive"]

[[rules]]
id = "done"
on_message = {{ topic = "{prefix}/done" }}
text = "done"
publish_to = ["{done_to}"]

[[publishers]]
id = "archive"
type = "file"

[[publishers]]
id = "console"
type = "console"
"""


def run(
    broker: Broker,
    state: Path,
    prefix: str,
    messages: list[tuple[str, bytes | str]],
    *,
    fill_first: Path | None = None,
    done_to: str = "archive",
) -> str:
    """Run the daemon, publish ``messages`` and a final marker, stop; its stderr.

    The marker fires rule ``done``; its log line (posted or failed) says every
    message before it has been handled.  ``fill_first``: a folder to fill up once
    the daemon runs, before the messages.
    """
    config = state.parent / f"{prefix}.toml"
    config.write_text(
        base_config(broker, state, name=prefix) + EVENTS.format(prefix=prefix, done_to=done_to),
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    log = StderrLines(gateway)
    marker = [(f"{prefix}/done", "1")]
    try:
        # Until the gateway has subscribed, a message is lost: send until one is handled.
        wait_until(lambda: publish(broker, marker) or log.count("rule done: "), 30, 0.5)
        if fill_first is not None:
            fill(fill_first)
        handled = log.count("rule done: ")
        publish(broker, [*messages, *marker])
        try:
            wait_until(lambda: log.count("rule done: ") > handled, 60)
        except AssertionError:
            raise AssertionError(f"the marker was not handled:\n{log.text()[-4000:]}") from None
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    return log.text()


def test_a_burst_of_events_is_queued_without_a_line_per_event(
    broker: Broker, tmp_path: Path
) -> None:
    # Firings used to be dropped when busy, with a warning each (10,000 events made
    # 9,821 lines); now they wait in SQLite and nothing about the burst is logged.
    err = run(broker, tmp_path / "state", "flood", [("flood/events", str(n)) for n in range(2000)])
    assert "dropped" not in err
    noisy = [line for line in err.splitlines() if " WARNING " in line or " ERROR " in line]
    assert noisy == []


def test_deeply_nested_json_event_logs_no_recursion_trace(broker: Broker, tmp_path: Path) -> None:
    err = run(broker, tmp_path / "state", "deep", [("deep/events", "[" * 100_000)])
    assert "RecursionError" not in err
    assert "Traceback" not in err


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=8m") as folder:
        yield folder


def test_a_full_disk_logs_one_line_not_a_traceback_per_firing_and_fires_once_freed(
    broker: Broker, small_disk: Path
) -> None:
    state = small_disk / "state"
    prefix = "full"
    config = small_disk.parent / f"{prefix}.toml"
    config.write_text(
        base_config(broker, state, name=prefix) + EVENTS.format(prefix=prefix, done_to="archive"),
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    log = StderrLines(gateway)
    try:
        wait_until(
            lambda: publish(broker, [(f"{prefix}/done", "1")]) or log.count("rule done: "), 30, 0.5
        )
        filler = fill(small_disk)
        publish(broker, [(f"{prefix}/events", str(n)) for n in range(30)])
        wait_until(lambda: log.has("cannot queue event firings"), 30)
        time.sleep(3)  # more batches fail to commit meanwhile
        assert log.count("cannot queue event firings") == 1  # once a minute, not per batch
        # Space again: the next message's batch writes the held firings, and they fire.
        filler.unlink()
        (small_disk / "filler2").unlink(missing_ok=True)
        publish(broker, [(f"{prefix}/done", "2")])
        try:
            wait_until(lambda: len(posts_of(state, "event ")) == 30, 60)
        except AssertionError:
            raise AssertionError(log.text()[-3000:]) from None
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    err = log.text()
    assert "Traceback" not in err, err[-3000:]
    assert sorted(int(t.split()[1]) for t in posts_of(state, "event ")) == list(range(30))


def posts_of(state: Path, prefix: str) -> list[str]:
    """Texts of the archived posts starting with ``prefix``."""
    return [p["text"] for p in archive_posts(state) if p["text"].startswith(prefix)]
