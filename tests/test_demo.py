"""The demo: broker, simulated devices and gateway in one command, no credentials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gateway.demo.broker import find_mosquitto
from tests.gwutil import archive_posts


@pytest.mark.parametrize("broker", ["auto", "amqtt"])
def test_demo_archives_posts_with_an_image(tmp_path: Path, broker: str) -> None:
    if broker == "auto" and find_mosquitto() is None:
        pytest.skip("mosquitto not installed; the amqtt case covers the embedded broker")
    state = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--duration",
            "8",
            "--state-dir",
            str(state),
            "--broker",
            broker,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    posts = archive_posts(state)
    rules = {p["rule"] for p in posts}
    assert {"conditions", "poolcam"} <= rules
    conditions = next(p for p in posts if p["rule"] == "conditions")
    assert "°C" in conditions["text"]
    assert "n/a" not in conditions["text"]  # the simulator's readings arrived before the post
    with_image = [p for p in posts if p["media"]]
    assert with_image, posts
    media = with_image[0]["media"][0]
    with Image.open(state / "posts" / media["file"]) as image:
        assert image.format == "JPEG"
        assert image.size == (media["width"], media["height"])
    assert media["alt"]
    assert "demo stopped" in result.stderr
    assert conditions["text"] in result.stdout  # the console publisher


def test_demo_as_the_readme_runs_it_archives_every_post_it_shows(tmp_path: Path) -> None:
    """``things-gateway demo`` in a fresh folder, default (relative) state folder."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=fresh,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert not [line for line in output.splitlines() if " ERROR " in line], output
    shown = [line for line in result.stdout.splitlines() if line.startswith("── ")]
    assert len(shown) >= 2, result.stdout
    posts = archive_posts(fresh / "things-gateway-demo")
    assert len(posts) == len(shown), output
    assert all(p["text"] in result.stdout for p in posts)
    assert f"all {len(shown)} posts shown are archived" in result.stderr


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """Ctrl-C signals the terminal's whole process group, the demo's broker included."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        if line.startswith("── "):  # a post was shown: everything is running
            break
    os.killpg(demo.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    rest, _ = demo.communicate(timeout=60)
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    noisy = [line for line in output.splitlines() if " WARNING " in line or " ERROR " in line]
    assert not noisy, output
    assert "posts shown are archived" in output


def test_demo_serves_its_page_and_prints_the_address_first(tmp_path: Path) -> None:
    import urllib.request

    from tests.gwutil import wait_until

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--duration",
            "20",
            "--state-dir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("things-gateway demo: its page is at http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()

        def timeline() -> str | None:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode()
            return page if "<article" in page and "<img" in page else None

        page = wait_until(timeline, timeout=30)
        assert "Demo pool" in page
        with urllib.request.urlopen(url + "status.json", timeout=5) as response:
            status = json.loads(response.read())
        assert status["running"] is True
        assert status["mqtt_connected"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
