"""Reloads release the old gateway: its threads end, no Gateway object of an old config
survives, and logging handlers are not added per reload."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

from gateway.demo.broker import Broker
from gateway.runtime.app import Gateway
from gateway.runtime.daemon import Daemon
from gateway.runtime.loading import load_config
from tests.gwutil import base_config, wait_until

RELOADS = 4


def write_config(path: Path, broker: Broker, state: Path, topic: str) -> Path:
    path.write_text(
        base_config(broker, state)
        + f"""
[[sensors]]
id = "temp"
topic = "{topic}/temp"
expire_after = "10m"

[[cameras]]
id = "cam"
topic = "{topic}/cam"

[[rules]]
id = "hourly"
every = "1h"
text = "{{{{ temp }}}}"
publish_to = ["archive"]

[[rules]]
id = "hot"
when = "temp > 1000"
text = "hot: {{{{ temp }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
""",
        encoding="utf-8",
    )
    return path


def running(daemon: Daemon, previous: Gateway | None) -> Gateway | None:
    """The daemon's gateway once it is a new one and subscribed."""
    gateway = daemon.gateway
    if gateway is None or gateway is previous or not gateway.ingest.ready.is_set():
        return None
    return gateway


def test_reloads_end_the_old_gateways_threads_and_drop_it(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "gw.toml", broker, tmp_path / "state", mqtt_topic)
    before = set(threading.enumerate())
    handlers = list(logging.getLogger().handlers)
    daemon = Daemon(path, load_config(path))
    runner = threading.Thread(target=daemon.run, name="test-daemon")
    runner.start()
    old_threads: list[threading.Thread] = []
    try:
        gateway = wait_until(lambda: running(daemon, None))
        for _ in range(RELOADS):
            theirs = [t for t in threading.enumerate() if t not in before and t is not runner]
            old_threads += theirs
            daemon.request_reload()
            gateway = wait_until(lambda previous=gateway: running(daemon, previous))
            assert theirs, "the gateway runs threads of its own"
            assert [t.name for t in theirs if t.is_alive()] == []
        del gateway
        gc.collect()
        gateways = [o for o in gc.get_objects() if isinstance(o, Gateway)]
        assert gateways == [daemon.gateway]
        assert logging.getLogger().handlers == handlers
    finally:
        daemon.request_stop()
        runner.join(30)
    assert [t.name for t in old_threads if t.is_alive()] == []
