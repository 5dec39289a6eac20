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


def test_preview_of_the_pool_example_without_the_x_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A newcomer installs '.[demo]': no oauthlib, and the example's X publisher (off)
    # once crashed `preview daily` and `preview --mention` with ModuleNotFoundError.
    import importlib.util

    from gateway.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "oauthlib" else real(name, *a)
    )
    monkeypatch.setitem(sys.modules, "oauthlib", None)  # importing it raises ImportError
    monkeypatch.setitem(sys.modules, "oauthlib.oauth1", None)
    monkeypatch.chdir(tmp_path)
    sample = tmp_path / "sample.json"
    sample.write_text('{"water_temp": 26.5, "air_temp": 21}', encoding="utf-8")
    example = str(ROOT / "config" / "examples" / "pool.toml")
    args = ["preview", "daily", "-c", example, "--sample", str(sample), "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "── x (x): not previewed: needs the 'oauthlib' package: pip install" in out
    assert "── mastodon (mastodon): " in out
    assert main(["preview", "--mention", "how warm?", "-c", example, "--sample", str(sample)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "reply temperature"
    assert "The water is 26.5 °C and the air 21 °C right now, Asker." in out
