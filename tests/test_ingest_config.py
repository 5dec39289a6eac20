"""Config of ingest: new [mqtt], [state] and [[sensors]] options, each error named by path."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.runtime.app import Gateway
from gateway.runtime.loading import load_config
from tests.gwutil import cli

BASE = """
[gateway]
name = "cfg"
state_dir = "{state_dir}"

[[rules]]
id = "r"
every = "1h"
text = "hello"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def errors_of(tmp_path: Path, extra: str) -> list[str]:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE.format(state_dir=tmp_path) + extra, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.errors


def test_every_new_error_is_named_by_its_path(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
[mqtt]
reconnect_min = "10s"
reconnect_max = "1s"

[mqtt.tls]
cert_file = "client.crt"

[state]
windows = ["10s"]

[[sensors]]
id = "t_{rom}"
topic = "s/{room}/t"

[[sensors]]
id = "j"
topic = "a/b#"
format = "tasmota"
range = [10, 1]

[[sensors]]
id = "k"
topic = "x/{a}{b}"
scale = 0
windows = ["1h", "40d"]
""",
    )
    assert "mqtt.reconnect_max: less than `reconnect_min`" in errors
    assert "mqtt.tls: set both `cert_file` and `key_file`, or neither" in errors
    assert "state.windows: each window must be between 1m and 31d" in errors
    assert "sensors[0].id: {rom} is not captured by the topic" in errors
    assert "sensors[1].field: format 'tasmota' needs `field`" in errors
    assert "sensors[1].topic: '#' must be a whole level, and the last one" in errors
    assert "sensors[1].range: min is greater than max" in errors
    assert "sensors[2].topic: a capture must be a whole level, like {room}" in errors
    assert "sensors[2].scale: must not be 0" in errors
    assert "sensors[2].windows[1]: must be between 1m and 31d" in errors


def test_tls_key_password_is_never_printed(tmp_path: Path) -> None:
    secret = "very-secret-key-pass"
    path = tmp_path / "gateway.toml"
    path.write_text(
        BASE.format(state_dir=tmp_path)
        + f'\n[mqtt]\nport = 0\n[mqtt.tls]\nkey_password = "{secret}"\nbogus = 1\n',
        encoding="utf-8",
    )
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 78
    assert "mqtt.tls.bogus: unknown key" in result.stderr
    assert "mqtt.port" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_gateway_keeps_history_and_windows_from_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        BASE.format(state_dir=tmp_path)
        + """
[state]
windows = ["30m"]
history_flush_interval = "1h"

[[sensors]]
id = "t"
topic = "t"
""",
        encoding="utf-8",
    )
    gateway = Gateway(load_config(path))
    at = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(5):
        gateway.state.record("t", float(i), "", at + timedelta(minutes=i))
    assert gateway.state.windows("t") == (timedelta(minutes=30),)
    stats = gateway.state.stats("t", "30m")
    assert stats is not None
    assert (stats.count, stats.max) == (5, 4.0)
    gateway.stop()  # never started: stopping still writes the history
    rows = sqlite3.connect(tmp_path / "gateway.db").execute(
        "SELECT count(*), sum(count) FROM readings_minute WHERE sensor = 't'"
    )
    assert rows.fetchone() == (5, 5)


def test_share_group_is_refused_with_a_pointer_to_the_readme(tmp_path: Path) -> None:
    """Issue 14.11: gateways splitting one stream each saw part of the readings and all
    posted the same `every` rules; the option is refused, never silently doubled posts."""
    errors = errors_of(tmp_path, '\n[mqtt]\nshare_group = "site1"\n')
    (error,) = [e for e in errors if e.startswith("mqtt.share_group: was removed")]
    assert "README.md, 'Large sites'" in error
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "### Large sites" in readme
    cli_run = cli("check-config", "-c", str(tmp_path / "gateway.toml"))
    assert cli_run.returncode == 78
    assert "mqtt.share_group: was removed" in cli_run.stderr + cli_run.stdout
