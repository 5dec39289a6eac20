"""Configs that would turn the gateway against itself are refused at load time.

A file archive inside the gateway's own folders (retention pruned it) or outside
state_dir by ``..``; a publisher whose MQTT topic feeds a rule's trigger (a post
loop); a state_dir the daemon cannot write.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.runtime.loading import load_config
from tests.gwutil import cli, tmpfs


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


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only file system."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        yield folder


@pytest.mark.parametrize("case", ["missing-under-a-file", "read-only", "missing-under-read-only"])
def test_an_unwritable_state_dir_is_a_config_error_for_check_config_and_run(
    tmp_path: Path, case: str, request: pytest.FixtureRequest
) -> None:
    if case == "missing-under-a-file":
        (tmp_path / "a-file").write_text("x")
        state = tmp_path / "a-file" / "state"
    else:
        ro = request.getfixturevalue("read_only_dir")
        state = ro if case == "read-only" else ro / "state"
    file = tmp_path / "gateway.toml"
    file.write_text(config_text(state, archive("posts")), encoding="utf-8")
    for command in ("check-config", "run"):
        result = cli(command, "-c", str(file), timeout=60)
        assert result.returncode == 78, (command, result.stderr)
        assert "gateway.state_dir: " in result.stderr
        assert "Traceback" not in result.stderr


LOOP = """
[[rules]]
id = "echo"
on_message = {{ topic = "{trigger}" }}
text = "got {{{{ event }}}}"
publish_to = ["out"]

[[publishers]]
id = "out"
type = "mqtt"
topic = "{topic}"
"""


@pytest.mark.parametrize(
    ("trigger", "topic"),
    [
        ("loop/#", "loop/out/{rule}"),  # 2,213 posts in 11 s
        ("loop/+/echo", "loop/out/{rule}"),
        ("t/t/x", "t/{gateway}/x"),
        ("a/b/image/+", "a/b"),  # the post's images go to <topic>/image/<n>
        ("a/#", "a"),
    ],
)
def test_a_publisher_writing_where_a_rule_listens_is_refused(
    tmp_path: Path, trigger: str, topic: str
) -> None:
    rules = LOOP.format(trigger=trigger, topic=topic)
    found = problems(tmp_path, config_text(tmp_path / "state", archive("posts"), rules))
    assert len(found) == 1, found
    assert found[0].startswith("publishers[0].topic: rule 'echo' posts to ")
    assert "each post would fire the rule again" in found[0]


@pytest.mark.parametrize(
    ("trigger", "topic"),
    [
        ("loop/in/#", "loop/out/{rule}"),
        ("a/+", "a/b/c"),
        ("a/b/c", "a/b"),
        ("t/u/x", "t/{gateway}/x"),
    ],
)
def test_a_publisher_clear_of_every_trigger_is_accepted(
    tmp_path: Path, trigger: str, topic: str
) -> None:
    rules = LOOP.format(trigger=trigger, topic=topic)
    assert problems(tmp_path, config_text(tmp_path / "state", archive("posts"), rules)) == []
