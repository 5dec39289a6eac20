"""Configs that would turn the gateway against itself are refused at load time.

A file archive inside the gateway's own folders (retention pruned it) or outside
state_dir by ``..``; a publisher whose MQTT topic feeds a rule's trigger (a post
loop); a state_dir the daemon cannot write.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.runtime.loading import load_config
from tests.gwutil import cli


def config_text(state_dir: Path, publishers: str, rules: str = "") -> str:
    return f"""
[gateway]
name = "t"
state_dir = "{state_dir}"

[[rules]]
id = "hourly"
every = "1h"
text = "hello"
publish_to = ["archive"]
{rules}
{publishers}
"""


def archive(path: str) -> str:
    return f'[[publishers]]\nid = "archive"\ntype = "file"\npath = "{path}"\n'


def problems(tmp_path: Path, text: str) -> list[str]:
    file = tmp_path / "gateway.toml"
    file.write_text(text, encoding="utf-8")
    try:
        load_config(file)
    except ConfigError as exc:
        return exc.errors
    return []


@pytest.mark.parametrize(
    "path",
    [
        "media",  # retention pruned the archive's images
        "media/archive",
        "./media",
        "posts/../media",
        ".",
        "",
        "../../../escaped-archive",
        "posts/../../x",
        "gateway.db-wal",
        "state.json",
        "{state}",
        "{state}/media/posts",
        "{state}/..",
        "/",
    ],
)
def test_archive_paths_overlapping_the_gateways_own_files_or_escaping_are_refused(
    tmp_path: Path, path: str
) -> None:
    state = tmp_path / "state"
    found = problems(tmp_path, config_text(state, archive(path.format(state=state))))
    assert len(found) == 1, found
    assert found[0].startswith("publishers[0].path: ")


@pytest.mark.parametrize("path", ["posts", "archive/2026", "{tmp}/elsewhere", "{state}/posts"])
def test_archive_paths_of_their_own_are_accepted(tmp_path: Path, path: str) -> None:
    state = tmp_path / "state"
    text = config_text(state, archive(path.format(state=state, tmp=tmp_path)))
    assert problems(tmp_path, text) == []


def test_check_config_names_the_overlapping_archive_path(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(config_text(tmp_path / "state", archive("media")), encoding="utf-8")
    result = cli("check-config", "-c", str(file))
    assert result.returncode == 78
    assert "publishers[0].path: 'media' overlaps the gateway's own 'media'" in result.stderr
