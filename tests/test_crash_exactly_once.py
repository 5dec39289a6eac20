"""Exactly once under crashes: SIGKILL the gateway at random moments while posts flow.

The gateway runs as a subprocess with a rule firing every second to four backends
at once: the file archive, a webhook, Mastodon and Bluesky (fakes in this process,
deduplicating the way the real services do).  It is killed with SIGKILL ``N`` times
(``THINGS_GATEWAY_CRASH_KILLS``, default 8; ``THINGS_GATEWAY_CRASH_SEED`` replays a
run), restarted each time, then left to drain.  Then: every post has every delivery
``sent``; the archive and every service hold each post exactly once as a created
object, however many requests were retried; the database passes integrity_check.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from gateway.publishers.bluesky import record_key
from tests.fakes.backends import BLUESKY, MASTODON, SECRETS, WEBHOOK
from tests.fakes.server import FakeServer, Fault
from tests.gwutil import archive_posts, base_config, wait_until

PUBLISHERS = ("archive", "hook", "masto", "sky")
BACKENDS = {"hook": WEBHOOK, "masto": MASTODON, "sky": BLUESKY}


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeServer]]:
    with ExitStack() as stack:
        servers = {pid: stack.enter_context(b.make_fake()) for pid, b in BACKENDS.items()}
        for server in servers.values():
            # Every answer comes 150 ms after the request took effect: a kill can land
            # between the service creating the post and the gateway hearing of it.
            server.fail_next(Fault("stall", delay=0.15), times=100_000)
        yield servers


def write_config(
    path: Path, state: Path, broker: Broker, fakes: dict[str, FakeServer], every: str
) -> Path:
    publishers = '\n[[publishers]]\nid = "archive"\ntype = "file"\n'
    for pid, backend in BACKENDS.items():
        entry = {"id": pid, "timeout": 5, **backend.config(fakes[pid])}
        publishers += "\n[[publishers]]\n" + "".join(
            f"{key} = {toml_value(value)}\n" for key, value in entry.items()
        )
    path.write_text(
        base_config(broker, state, name="crashgw")
        + f"""
[[rules]]
id = "tick"
every = "{every}"
text = "tick {{{{ now | time('%H:%M:%S') }}}}"
publish_to = {list(PUBLISHERS)!r}
"""
        + publishers,
        encoding="utf-8",
    )
    return path


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def open_deliveries(db: Path) -> int | None:
    """Deliveries not yet sent (None while the database cannot be read)."""
    try:
        with sqlite3.connect(db) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM deliveries WHERE status!='sent'").fetchone()[0]
            )
    except sqlite3.Error:
        return None


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    broker: Broker, fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    kills = int(os.environ.get("THINGS_GATEWAY_CRASH_KILLS", "8"))
    seed = int(os.environ.get("THINGS_GATEWAY_CRASH_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    state = tmp_path / "state"
    log = tmp_path / "gateway.log"
    busy = write_config(tmp_path / "busy.toml", state, broker, fakes, every="1s")
    for n in range(kills):
        offset = log.stat().st_size if log.exists() else 0
        process = start(busy, log)
        if n % 4 == 3:  # now and then, a kill during start-up (recovery itself interrupted)
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            # The random moment counts from "running", so a slow machine still gets
            # kills while posts flow, not only during start-up.
            wait_until(lambda o=offset: b"gateway crashgw running" in log.read_bytes()[o:], 30)
            time.sleep(rng.uniform(0.0, 3.0))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert process.returncode == -signal.SIGKILL

    # Drain: the same publishers and state, a rule that will not fire during the test.
    quiet = write_config(tmp_path / "quiet.toml", state, broker, fakes, every="1h")
    offset = log.stat().st_size
    process = start(quiet, log)
    try:
        # Signal handlers are in place once it says it runs.
        wait_until(lambda: b"gateway crashgw running" in log.read_bytes()[offset:], timeout=30)
        wait_until(lambda: open_deliveries(state / "gateway.db") == 0, timeout=90, interval=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, output[-3000:]
    for secret in SECRETS:
        assert secret not in output

    conn = sqlite3.connect(state / "gateway.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    posts = [row[0] for row in conn.execute("SELECT id FROM posts ORDER BY id")]
    rows = conn.execute("SELECT post_id, publisher, status FROM deliveries").fetchall()
    conn.close()
    assert posts, "no post was made before the kills"
    assert sorted((p, pub) for p, pub, _ in rows) == sorted(
        (p, pub) for p in posts for pub in PUBLISHERS
    )
    assert {status for _, _, status in rows} == {"sent"}

    assert Counter(p["id"] for p in archive_posts(state)) == Counter(posts)
    hook, masto, sky = fakes["hook"], fakes["masto"], fakes["sky"]
    assert Counter(request.json()["id"] for request, _ in hook.created) == Counter(posts)  # type: ignore[attr-defined]
    assert len(masto.statuses) == len(posts)  # type: ignore[attr-defined]
    assert set(masto._by_key) == {f"{p}-masto" for p in posts}  # type: ignore[attr-defined]
    rkeys = Counter(uri.rsplit("/", 1)[1] for uri in sky.records)  # type: ignore[attr-defined]
    assert rkeys == Counter(record_key(p) for p in posts)
    for server in fakes.values():
        assert not server.errors

    retried = {pid: len(server.calls(BACKENDS[pid].create_path)) for pid, server in fakes.items()}
    recovered = output.count("interrupted by a restart will be retried")
    print(
        f"\ncrash test: seed={seed} kills={kills} posts={len(posts)} "
        f"restarts that found deliveries in flight={recovered} "
        f"create requests={retried} (created exactly {len(posts)} each)"
    )
