"""Only what a configuration uses is imported: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = [
    "PIL",
    "jinja2",
    "httpx",
    "pydantic",
    "twitter_text",
    "oauthlib",
    "apprise",
    "gateway.media.images",
    "gateway.media.charts",
    "gateway.publishers.mastodon",
    "gateway.publishers.bluesky",
    "gateway.publishers.x",
    "gateway.publishers.webhook",
    "gateway.publishers.apprise",
    "gateway.publishers.mqtt",
]

CONSOLE_FILE = """
[gateway]
name = "lazy"
timezone = "Europe/London"
state_dir = "{state}"
[mqtt]
host = "127.0.0.1"
[[sensors]]
id = "t"
topic = "x/t"
[[rules]]
id = "r"
every = "1h"
text = "T {{{{ t }}}}"
publish_to = ["out", "arch"]
[[publishers]]
id = "out"
type = "console"
[[publishers]]
id = "arch"
type = "file"
"""

PROBE = """
import json, sys
from pathlib import Path
from gateway.runtime.app import Gateway
from gateway.runtime.loading import load_config
gateway = Gateway(load_config(Path(sys.argv[1])))
{after}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded(code: str, *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_a_console_and_file_config_loads_no_media_template_or_http_library(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONSOLE_FILE.format(state=tmp_path / "state"))
    loaded = _loaded(PROBE.format(after="", heavy=HEAVY), str(config))
    # Jinja2 compiles the rule's template at load (errors are refused at start-up)
    assert loaded == ["jinja2", "pydantic"]


def test_a_post_with_text_only_still_loads_no_pillow(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONSOLE_FILE.format(state=tmp_path / "state"))
    after = "assert gateway.fire('r') is not None\ngateway.outbox.close()"
    loaded = _loaded(PROBE.format(after=after, heavy=HEAVY), str(config))
    assert "PIL" not in loaded
    assert "gateway.media.images" not in loaded


def test_version_imports_nothing_heavy() -> None:
    code = (
        "import runpy, sys, json, contextlib, io\n"
        "sys.argv = ['gateway', '--version']\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    runpy.run_module('gateway', run_name='__main__')\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} + ['gateway.config'] if m in sys.modules)))"
    )
    assert _loaded(code) == []
