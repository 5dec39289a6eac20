"""Mention-to-reply latency of the installed daemon, and the requests per hour reading costs.

Measures ``things-gateway run`` (the installed entry point, a subprocess, as users run
it) with ``[conversations]`` on and one Mastodon publisher pointed at a local fake
(``tests/fakes/mastodon_stream.py``, 127.0.0.1, Mastodon's notifications and streaming
formats): from the moment a mention is posted on the fake to the moment the gateway's
reply (``in_reply_to_id`` = the mention) arrives there, p50 and p99 per run, for

- streaming (``streaming = true``, the default, where the server offers it), and
- polling at the default ``poll_interval`` (60 s; mentions at random moments over two
  intervals, so the wait for the next poll is part of the figure, as it is for users).

It also counts the requests the reading made on the fake (notifications polls, stream
health probes, stream connects; not the replies) and prints them per hour and per
5 minutes beside each service's documented rate limit.  Baseline, same fake, same run:
a bare HTTP client's request-to-response (``POST /api/v1/statuses``).  Several runs:
the median and the range (min-max) of each run's figures, never the best run.

    python bench/mentions.py [--runs 3] [--mentions 10] [--quick]

``--quick`` polls every 5 s instead of 60 s (shorter; the figures are then not the
default's).  Needs mosquitto (the daemon always connects to a broker).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.demo.broker import Broker, start_broker
from tests.fakes.mastodon_stream import MentionsFake, answering_toml

DEFAULT_POLL = 60.0
"""``[conversations] poll_interval``'s default, seconds."""

LIMITS = (
    (
        "Mastodon",
        "300 requests / 5 min per account (docs.joinmastodon.org/api/rate-limits)",
        300.0 / 300.0,
    ),
    (
        "Bluesky",
        "3,000 requests / 5 min per IP on a Bluesky-hosted PDS, which proxies"
        " listNotifications (docs.bsky.app/docs/advanced-guides/rate-limits)",
        3000.0 / 300.0,
    ),
    (
        "X",
        "GET /2/users/:id/mentions, 180 requests / 15 min per user (its API reference)",
        180.0 / 900.0,
    ),
    (
        "X Basic",
        "the same on Basic access, 10 requests / 15 min per user (developer portal,"
        " as quoted in tweepy discussion #2127)",
        10.0 / 900.0,
    ),
)
"""(service, the documented limit, that limit in requests per second)."""

READ_PATHS = (
    "GET /api/v1/notifications",
    "GET /api/v1/streaming/health",
    "GET /api/v1/streaming/user/notification",
)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def daemon_command() -> list[str]:
    """The installed ``things-gateway`` next to this interpreter (else ``-m gateway``)."""
    script = Path(sys.executable).parent / "things-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def config_text(broker: Broker, state: Path, base_url: str, streaming: bool, poll: float) -> str:
    """A gateway answering every mention on one Mastodon account, caps out of the way."""
    head = f"""
[gateway]
name = "bench"
state_dir = "{state}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
"""
    return head + answering_toml(
        base_url, "bench-token-not-secret", streaming=streaming, poll_interval=f"{poll:g}s"
    )


def bare_round_trip(fake: MentionsFake, samples: int = 20) -> list[float]:
    """A bare client's ``POST /api/v1/statuses`` request-to-response, ms."""
    out = []
    with httpx.Client(base_url=fake.base_url) as client:
        for n in range(samples):
            start = time.perf_counter()
            client.post("/api/v1/statuses", json={"status": f"baseline {n}"}).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
    return out


def wait_for(check: Callable[[], bool], timeout: float) -> None:
    """Wait until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("the daemon did not start reading mentions in time")
        time.sleep(0.05)


def one_run(
    broker: Broker, streaming: bool, poll: float, mentions: int, seed: int
) -> tuple[list[float], float, dict[str, int], float]:
    """One daemon, ``mentions`` mentions: latencies and baseline p50 (ms), the reads
    made, and the polls an hour after the first."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp, MentionsFake(heartbeat=15.0) as fake:
        config = Path(tmp) / "gateway.toml"
        config.write_text(
            config_text(broker, Path(tmp) / "state", fake.base_url, streaming, poll),
            encoding="utf-8",
        )
        daemon = subprocess.Popen(
            [*daemon_command(), "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            if streaming:
                wait_for(lambda: fake.open_streams() == 1, 60)
            else:
                wait_for(lambda: fake.requests.get("GET /api/v1/notifications", 0) >= 1, 60)
            window = 0.0 if streaming else 2 * poll
            moments = sorted(rng.uniform(0, window) for _ in range(mentions))
            asked: list[tuple[str, float]] = []
            t0 = time.monotonic()
            for moment in moments:
                delay = t0 + moment - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif streaming:
                    time.sleep(0.2)  # one at a time: the figure is a single mention's
                at = time.monotonic()
                asked.append((fake.mention("@pool how warm is it?", author=f"u{len(asked)}"), at))
            latencies = []
            for sid, at in asked:
                reply = fake.wait_reply(sid, timeout=poll * 2 + 30)
                if reply is None:
                    raise SystemExit(f"no reply to mention {sid}")
                latencies.append((reply.at - at) * 1000)
            baseline = statistics.median(bare_round_trip(fake))
            reads = {p: fake.requests.get(p, 0) for p in READ_PATHS}
            polls = fake.request_times.get("GET /api/v1/notifications", [])
            # steady state: the polls after the first (made at start), per second since it
            rate = (len(polls) - 1) / (time.monotonic() - polls[0]) if len(polls) > 1 else 0.0
        finally:
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=30)
        if daemon.returncode != 0:
            raise SystemExit(f"the daemon exited {daemon.returncode}: {err[-2000:]}")
    return latencies, baseline, reads, rate * 3600.0


def spread(values: list[float], unit: str, fmt: str = "{:.2f}") -> str:
    """``median (min-max) unit``."""
    med = fmt.format(statistics.median(values))
    return f"{med} {unit} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> None:
    """Measure streaming and polling, each several runs, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mentions", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="poll every 5 s, not 60 s")
    args = parser.parse_args()
    poll = 5.0 if args.quick else DEFAULT_POLL
    print(
        "Mention-to-reply latency of `things-gateway run` (a subprocess) against a local"
        " Mastodon fake on 127.0.0.1, streaming and polling every"
        f" {poll:g} s; the requests per hour reading mentions costs, beside each service's"
        " documented rate limit; baseline: a bare client's request-to-response on the"
        f" same fake. {args.runs} runs of {args.mentions} mentions each: median (range)."
    )
    polling_rates: list[float] = []
    with start_broker(prefer="mosquitto") as broker:
        for streaming in (True, False):
            p50s, p99s, bases = [], [], []
            reads_seen: dict[str, int] = {}
            for run in range(args.runs):
                lat, base, reads, hourly = one_run(broker, streaming, poll, args.mentions, seed=run)
                p50s.append(percentile(lat, 50))
                p99s.append(percentile(lat, 99))
                bases.append(base)
                if not streaming:
                    polling_rates.append(hourly)
                reads_seen = {k: reads_seen.get(k, 0) + v for k, v in reads.items()}
            mode = "streaming" if streaming else f"polling every {poll:g} s"
            print(f"\n{mode}:")
            fmt = "{:.0f}"
            print(
                f"  mention to reply  p50 {spread(p50s, 'ms', fmt)}   p99 {spread(p99s, 'ms', fmt)}"
            )
            print(f"  baseline          bare POST /api/v1/statuses {spread(bases, 'ms')}")
            print(
                f"  reads made        {reads_seen} over {args.runs} runs"
                + ("  (then none while the stream stays up)" if streaming else "")
            )
    per_second = statistics.median(polling_rates) / 3600.0
    print(
        f"\nreading mentions, polling every {poll:g} s (after the poll at start):"
        f" {spread(polling_rates, 'requests/hour', '{:.0f}')} = {per_second * 300:.1f} per 5 min"
        " (each reply is one more request; streaming: none while connected, a health"
        " probe, a catch-up poll and a connect per reconnect)"
    )
    for service, limit, tightest in LIMITS:
        share = per_second / tightest * 100
        verdict = "well under it" if share < 25 else ("under it" if share < 100 else "OVER it")
        print(f"  {service:8} {limit}: polling uses {share:.0f}% of it, {verdict}")


if __name__ == "__main__":
    main()
