"""Conversations in the real daemon: ``things-gateway run`` against mastodon-mock.

A real mosquitto broker, the gateway as a subprocess on alice's account, bob (and
carol) asking through mastodon-mock's API, and the replies read back through it.

``THINGS_GATEWAY_MENTION_KILLS`` sets how many SIGKILLs the kill test deals (default
20, about a minute): ``THINGS_GATEWAY_MENTION_KILLS=50 pytest
tests/test_conversations_daemon.py``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo.broker import Broker
from tests.fakes.mastodon_stream import answering_toml
from tests.gwutil import base_config, start_gateway, wait_until
from tests.test_durability import db_rows, deal_sigkills, pid_of

pytest.importorskip("mastodon_mock.testing.server")
from mastodon_mock.testing.server import MockServer

KILLS = int(os.environ.get("THINGS_GATEWAY_MENTION_KILLS", "20"))


def conversations_config(
    broker: Broker,
    state: Path,
    base_url: str,
    *,
    streaming: bool,
    interval: str = "1s",
    account: str = "alice",
) -> str:
    """A gateway on ``account`` that answers every mention, without caps."""
    return base_config(broker, state, name=f"gw-{account}") + answering_toml(
        base_url, f"{account}_token", streaming=streaming, poll_interval=interval
    )


def api(mock: MockServer, token: str, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(
        method,
        f"{mock.base_url}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        **kw,
    )
    response.raise_for_status()
    return response.json()


def replies_to(mock: MockServer, status_id: str) -> list[dict[str, Any]]:
    """alice's statuses in reply to ``status_id``, read through the API."""
    context = api(mock, "bob_token", "GET", f"/api/v1/statuses/{status_id}/context")
    return [s for s in context["descendants"] if s["account"]["username"] == "alice"]


def alice_statuses(mock: MockServer) -> list[dict[str, Any]]:
    """Every status on alice's account, paged through ``max_id``."""
    me = api(mock, "alice_token", "GET", "/api/v1/accounts/verify_credentials")
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 40}
    while True:
        page = api(
            mock, "alice_token", "GET", f"/api/v1/accounts/{me['id']}/statuses", params=params
        )
        if not page:
            return found
        found.extend(page)
        params = {"limit": 40, "max_id": page[-1]["id"]}


@pytest.fixture
def mock() -> Any:
    with MockServer() as server:
        yield server


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "polling"])
def test_the_daemon_answers_a_mention_and_the_reply_reads_back(
    broker: Broker, tmp_path: Path, mock: MockServer, streaming: bool
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        conversations_config(broker, state, mock.base_url, streaming=streaming), encoding="utf-8"
    )
    gateway = start_gateway(config)
    try:
        wait_until(lambda: pid_of(state) == gateway.pid, timeout=30)
        asked = api(
            mock,
            "bob_token",
            "POST",
            "/api/v1/statuses",
            json={"status": "@alice how warm is the pool?", "visibility": "unlisted"},
        )
        (reply,) = wait_until(lambda: replies_to(mock, asked["id"]), timeout=30)
        assert reply["in_reply_to_id"] == asked["id"]
        assert reply["visibility"] == "unlisted"  # never wider than the mention
        assert "24.5 °C" in reply["content"]
        assert "@bob" in reply["content"]
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    rows = db_rows(state / "gateway.db", "SELECT remote_id, outcome FROM mentions")
    assert rows == [(asked["id"], "answered")]


class Askers:
    """bob and carol mention alice continuously, each status id kept."""

    def __init__(self, mock: MockServer, every: float) -> None:
        self.mock = mock
        self.every = every
        self.asked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            token = ("bob_token", "carol_token")[n % 2]
            status = api(
                self.mock, token, "POST", "/api/v1/statuses", json={"status": f"@alice warm? #{n}"}
            )
            self.asked.append(str(status["id"]))
            n += 1
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_sigkills_at_random_moments_neither_miss_nor_double_a_reply(
    broker: Broker, tmp_path: Path, mock: MockServer
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        conversations_config(broker, state, mock.base_url, streaming=True), encoding="utf-8"
    )
    db = state / "gateway.db"
    rng = random.Random(int(os.environ.get("THINGS_GATEWAY_KILL_SEED", "18")))
    askers = Askers(mock, every=0.25)
    try:
        deal_sigkills(config, state, KILLS, rng)  # at random moments of reading and replying
    finally:
        askers.stop()
    asked = list(askers.asked)
    gateway = start_gateway(config)
    try:
        wait_until(lambda: pid_of(state) == gateway.pid, timeout=30)

        def all_answered() -> bool:
            rows = db_rows(db, "SELECT remote_id FROM mentions WHERE outcome='answered'")
            done = {str(r[0]) for r in rows}
            unsent = db_rows(db, "SELECT 1 FROM deliveries WHERE status != 'sent' LIMIT 1")
            return set(asked) <= done and not unsent

        wait_until(all_answered, timeout=120, interval=0.5)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]

    replies: dict[str, list[str]] = {}
    for status in alice_statuses(mock):
        replies.setdefault(str(status["in_reply_to_id"]), []).append(str(status["id"]))
    missed = [a for a in asked if a not in replies]
    doubled = {a: r for a, r in replies.items() if len(r) > 1}
    strays = [a for a in replies if a not in asked]  # a status that is not a reply to one
    assert (missed, doubled, strays) == ([], {}, [])
    assert len(asked) >= 4 * KILLS
    print(f"\n{KILLS} SIGKILLs: {len(asked)} mentions, {len(replies)} replies, 0 missed, 0 doubled")


def test_two_gateways_that_mention_each_other_stop_after_the_first_exchange(
    broker: Broker, tmp_path: Path, mock: MockServer
) -> None:
    """alice's thing is marked bot (as a thing's account should be); bob's owner forgot.

    bob's thing asks alice's; alice's answer mentions bob and matches bob's replies
    too ("Warm? ..."), yet bob's gateway does not answer it: alice is a bot.
    """
    api(mock, "alice_token", "PATCH", "/api/v1/accounts/update_credentials", data={"bot": "true"})
    gateways = {}
    for account in ("alice", "bob"):
        state = tmp_path / account
        config = tmp_path / f"{account}.toml"
        config.write_text(
            conversations_config(broker, state, mock.base_url, streaming=True, account=account),
            encoding="utf-8",
        )
        gateways[account] = (state, start_gateway(config))
    try:
        for state, process in gateways.values():
            wait_until(lambda s=state, p=process: pid_of(s) == p.pid, timeout=30)
        asked = api(mock, "bob_token", "POST", "/api/v1/statuses", json={"status": "@alice warm?"})
        (answer,) = wait_until(lambda: replies_to(mock, asked["id"]), timeout=30)
        bob_db = gateways["bob"][0] / "gateway.db"
        wait_until(lambda: db_rows(bob_db, "SELECT outcome FROM mentions"), timeout=30)
        time.sleep(3)  # both keep reading: a loop would show by now
    finally:
        for _state, process in gateways.values():
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    assert "@bob" in answer["content"]
    assert "Warm?" in answer["content"]
    assert db_rows(bob_db, "SELECT remote_id, outcome, reason FROM mentions") == [
        (answer["id"], "skipped", "bot")
    ]
    alice_db = gateways["alice"][0] / "gateway.db"
    assert db_rows(alice_db, "SELECT remote_id, outcome FROM mentions") == [
        (asked["id"], "answered")
    ]
    context = api(mock, "bob_token", "GET", f"/api/v1/statuses/{asked['id']}/context")
    assert [s["id"] for s in context["descendants"]] == [answer["id"]]  # the whole thread


def test_the_pool_example_answers_on_mastodon_with_a_fresh_photo(
    broker: Broker, tmp_path: Path, mock: MockServer
) -> None:
    from tests.gwutil import publish
    from tests.poolexample import camera_agent, pool_config

    name = f"pool{os.getpid()}"
    config = pool_config(
        tmp_path,
        broker,
        name,
        {
            '"https://mastodon.example"': f'"{mock.base_url}"',
            "enabled = false                         # set true": "enabled = true  # set true",
        },
    )
    env = {**os.environ, "MASTODON_TOKEN": "alice_token"}
    with camera_agent(broker, f"{name}/cam/pool") as captures:
        gateway = start_gateway(config, env=env)
        try:
            wait_until(lambda: pid_of(tmp_path / "state") == gateway.pid, timeout=30)
            publish(broker, [(f"{name}/pool/temperature", "26.5")], retain=True)
            asked = api(
                mock,
                "bob_token",
                "POST",
                "/api/v1/statuses",
                json={"status": "@alice how warm is the water today?"},
            )
            (reply,) = wait_until(lambda: replies_to(mock, asked["id"]), timeout=40)
            assert reply["in_reply_to_id"] == asked["id"]
            assert "The water is 26.5 °C" in reply["content"]
            (photo,) = reply["media_attachments"]
            assert photo["type"] == "image"
            alt = "Underwater view of the pool just now; the water is 26.5 °C"
            assert photo["description"] == alt
            assert captures, "the camera was not asked for a fresh frame"
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.communicate(timeout=30)
            publish(broker, [(f"{name}/pool/temperature", b"")], retain=True)
