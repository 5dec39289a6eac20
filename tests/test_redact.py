"""Secrets stay out of log lines and error messages (gateway.config.secrets)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from gateway.config.secrets import redact, register_secret
from gateway.runtime.loading import load_config
from gateway.runtime.logs import make_formatter
from tests.gwutil import cli


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rtsp://admin:hunter2@10.0.0.5:554/stream1: Connection refused",
            "rtsp://***@10.0.0.5:554/stream1: Connection refused",
        ),
        ("GET https://TOKEN123@hooks.example/x failed", "GET https://***@hooks.example/x failed"),
        (
            "http://cam/cgi-bin/api.cgi?cmd=Snap&user=admin&password=hunter2 answered 500",
            "http://cam/cgi-bin/api.cgi?cmd=Snap&user=admin&password=*** answered 500",
        ),
        ("https://h/p?Token=abc;x=1&API_KEY=k1#f", "https://h/p?Token=***;x=1&API_KEY=***#f"),
        ("https://h/p?access_token=abc&sig=zz", "https://h/p?access_token=***&sig=***"),
        # nothing secret: left alone
        ("water 21.5 °C at http://cam.lan/snap.jpg?width=640", None),
        ("keys=3 password policy; token bucket; mail me@example.org", None),
    ],
)
def test_redact_masks_credentials_in_urls(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_registered_secrets_are_masked_longest_first() -> None:
    register_secret("abcd1234")
    register_secret("abcd1234-and-more")
    register_secret("abc")  # too short to mask by value: it would garble ordinary text
    register_secret(None)
    register_secret("")
    assert redact("x abcd1234-and-more y abcd1234 z abc") == "x *** y *** z abc"


@pytest.mark.parametrize("journal", [False, True])
def test_log_lines_and_tracebacks_are_masked(journal: bool) -> None:
    register_secret("s3cret-token-42")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(journal=journal))
    log = logging.getLogger("tests.redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("posting with %s to %s", "s3cret-token-42", "rtsp://u:pw42@cam/s")
        try:
            raise RuntimeError("refused: s3cret-token-42")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    text = stream.getvalue()
    assert "s3cret-token-42" not in text
    assert "pw42" not in text
    assert "posting with *** to rtsp://***@cam/s" in text
    assert "RuntimeError: refused: ***" in text  # the traceback's last line


def test_config_secrets_are_registered_for_masking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "MASTODON_TOKEN").write_text("token-from-a-credential-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("SITE_NAME", "poolcam")
    path = tmp_path / "gateway.toml"
    path.write_text(
        """
[gateway]
name = "${SITE_NAME}"

[mqtt]
username = "gw"
password = "inline-mqtt-password"

[[publishers]]
id = "hook"
type = "webhook"
url = "https://hooks.example/T000/B000/inline-webhook-path"

[[publishers]]
id = "m"
type = "mastodon"
base_url = "https://mastodon.example"
access_token = "${MASTODON_TOKEN}"
""",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.gateway.name == "poolcam"
    line = (
        "poolcam: inline-mqtt-password token-from-a-credential-file"
        " https://hooks.example/T000/B000/inline-webhook-path"
    )
    # a plain setting read from the environment is not a secret; the rest are
    assert redact(line) == "poolcam: *** *** ***"


def test_a_config_error_on_a_field_given_a_secret_never_prints_the_secret(
    tmp_path: Path,
) -> None:
    token = "mastotok_4b1f0c9e8d7a6b5c"
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
state_dir = "{tmp_path}"

[[publishers]]
id = "m"
type = "mastodon"
base_url = "https://mastodon.example"
access_token = "${{MASTODON_TOKEN}}"

[[rules]]
id = "r"
every = "1h"
cooldown = "${{MASTODON_TOKEN}}"
text = "hi"
publish_to = ["m"]
""",
        encoding="utf-8",
    )
    env = {**os.environ, "MASTODON_TOKEN": token}
    result = cli("check-config", "-c", str(path), env=env)
    assert result.returncode == 78
    assert "rules[0].cooldown" in result.stdout + result.stderr
    assert "${MASTODON_TOKEN}" in result.stdout + result.stderr  # names the reference
    assert token not in result.stdout + result.stderr
