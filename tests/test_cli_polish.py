"""Small things a user meets first (issue #13, item 14): startup, help, log times, Apprise."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.runtime.logs import make_formatter
from tests.gwutil import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["history", "--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gateway", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    heavy = {"pydantic", "pydantic_settings", "jinja2", "gateway.config", "paho", "PIL"}
    assert not heavy & imported


def test_history_help_points_to_the_readme_not_a_missing_design_md() -> None:
    result = cli("history", "--help")
    assert result.returncode == 0
    assert "DESIGN.md" not in result.stdout
    assert "README" in result.stdout
    assert not (ROOT / "DESIGN.md").exists()


def test_terminal_log_lines_carry_the_utc_offset() -> None:
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "hello", None, None)
    line = make_formatter(journal=False).format(record)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4} INFO gateway.x: hello$", line)


def test_apprise_default_title_is_the_documented_one(tmp_path: Path) -> None:
    pytest.importorskip("apprise")
    from gateway.config import AppriseConfig
    from gateway.model import Post, new_post_id
    from gateway.publishers import build_publisher
    from gateway.publishers.base import PublisherContext
    from tests.fakes.webhook import FakeWebhook

    example = tomllib.loads((ROOT / "config/gateway.example.toml").read_text(encoding="utf-8"))
    (documented,) = [p for p in example["publishers"] if p["type"] == "apprise"]
    assert documented["title"] == AppriseConfig.model_fields["title"].default
    with FakeWebhook() as server:
        host = server.url.removeprefix("http://")
        config = AppriseConfig.model_validate(
            {"id": "notify", "type": "apprise", "urls": [f"json://{host}/hooks/notify"]}
        )  # no title: the default
        publisher = build_publisher(config, PublisherContext(tmp_path, "pool"))
        post = Post(new_post_id(), "hourly", datetime.now(UTC), "Water 24 °C", (), "en")
        publisher.publish(post, post.text, (), "key-1")
        publisher.close()
        (sent,) = server.calls("/hooks/notify", "POST")
    assert sent.json()["title"] == "pool: hourly"
