"""``things-gateway outbox``: list undelivered posts with their errors; retry or drop one."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.demo.broker import Broker
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Delivery, Outbox
from gateway.publishers import build_publisher
from gateway.publishers.base import PublisherContext
from gateway.runtime.loading import load_config
from tests.fakes.backends import WEBHOOK_TOKEN
from tests.fakes.webhook import FakeWebhook
from tests.gwutil import base_config, cli, start_gateway, wait_until
from tests.test_outbox import make_post


@pytest.fixture
def hook() -> Iterator[FakeWebhook]:
    with FakeWebhook() as fake:
        yield fake


@pytest.fixture
def config(tmp_path: Path, hook: FakeWebhook) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
state_dir = "{tmp_path / "state"}"

[[publishers]]
id = "hook"
type = "webhook"
url = "{hook.url}/hooks/{WEBHOOK_TOKEN}"
timeout = 2
""",
        encoding="utf-8",
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_outbox_lists_retries_and_drops(
    config: Path, hook: FakeWebhook, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "outbox", "-c", str(config)) == (0, "outbox is empty (no database yet)\n")
    gateway_config = load_config(config)
    outbox = Outbox(gateway_config.gateway.resolved_state_dir() / "gateway.db")
    sent, failed, dead, pending = posts = [make_post(f"post {n}") for n in range(4)]
    for post in posts:
        outbox.add(post, {"hook": post.text})
    (hook_config,) = gateway_config.publishers
    publisher = build_publisher(hook_config, PublisherContext(Path(), "gw"))
    worker = DeliveryWorker(outbox, publisher, RetryPolicy(base_delay=3600, jitter=0))
    assert worker.step() == 0  # the first post goes
    echo = {"error": f"token {WEBHOOK_TOKEN} refused"}  # a server that echoes the URL
    hook.reply_next(500, echo)
    assert worker.step() == 0  # the second fails; its retry is an hour away
    hook.reply_next(401, echo)
    worker.attempt(Delivery(dead, "hook", dead.text, "pending", 0, 0.0, None))
    publisher.close()
    outbox.close()

    code, out = run(capsys, "outbox", "-c", str(config))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{failed.id}  hook         failed   attempts=1  webhook: HTTP 500")
    assert lines[1].startswith(
        f"{dead.id}  hook         dead     attempts=1  permanent: webhook: HTTP 401"
    )
    assert lines[2] == f"{pending.id}  hook         pending  attempts=0"
    assert "***" in out
    assert WEBHOOK_TOKEN not in out
    assert sent.id not in out

    assert run(capsys, "outbox", "-c", str(config), "--retry", dead.id, "hook") == (
        0,
        f"done: {dead.id} → hook\nthe gateway is not running; it delivers when it starts\n",
    )
    assert run(capsys, "outbox", "-c", str(config), "--drop", failed.id, "hook")[0] == 0
    assert run(capsys, "outbox", "-c", str(config), "--drop", sent.id, "hook") == (
        1,
        f"no such open delivery: {sent.id} → hook\n",
    )
    assert run(capsys, "outbox", "-c", str(config), "--retry", "nope", "hook")[0] == 1
    assert run(capsys, "outbox", "-c", str(config), "--retry", sent.id, "hook")[0] == 1

    outbox = Outbox(gateway_config.gateway.resolved_state_dir() / "gateway.db")
    history = {e["id"]: e["deliveries"]["hook"] for e in outbox.history(10)}
    outbox.close()
    assert history[dead.id]["status"] == "pending"  # will be tried again now
    assert history[failed.id] == {
        **history[failed.id],
        "status": "dead",
        "last_error": "dropped by operator",
    }
    assert history[sent.id]["status"] == "sent"
    assert len(hook.created) == 1

    code, out = run(capsys, "outbox", "-c", str(config))
    assert code == 0
    assert f"{failed.id}  hook         dead     attempts=1  dropped by operator" in out


def test_usage_errors_exit_2(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["outbox", "-c", str(config), "--retry", "only-one-arg"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["outbox", "-c", str(config), "--retry", "a", "b", "--drop", "a", "b"])
    assert exit_info.value.code == 2


def test_retry_makes_the_running_daemon_deliver_now(
    broker: Broker, tmp_path: Path, hook: FakeWebhook
) -> None:
    """A real daemon holds a failed delivery for an hour; ``outbox --retry`` sends it now."""
    state = tmp_path / "state"
    path = tmp_path / "gw.toml"
    path.write_text(
        base_config(broker, state)
        + f"""
[[publishers]]
id = "hook"
type = "webhook"
url = "{hook.url}/hooks/{WEBHOOK_TOKEN}"
timeout = 2
""",
        encoding="utf-8",
    )
    post = make_post("retry me")
    outbox = Outbox(state / "gateway.db")
    outbox.add(post, {"hook": post.text})
    outbox.close()
    hook.reply_next(503, {"error": "busy"}, {"Retry-After": "3600"})

    def delivery() -> dict[str, Any]:
        reader = Outbox(state / "gateway.db")
        try:
            (entry,) = reader.history(5)
        finally:
            reader.close()
        return dict(entry["deliveries"]["hook"])

    daemon = start_gateway(path)
    try:
        wait_until(lambda: delivery()["status"] == "failed", timeout=20)  # back in an hour
        wait_until(lambda: (state / "things-gateway.pid").exists(), timeout=20)
        result = cli("outbox", "-c", str(path), "--retry", post.id, "hook")
        asked = time.monotonic()
        assert result.returncode == 0, result.stderr
        assert f"asked the running gateway (pid {daemon.pid}) to deliver now" in result.stdout
        wait_until(lambda: delivery()["status"] == "sent", timeout=10)
        took = time.monotonic() - asked
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert took < 5
    assert len(hook.created) == 1
