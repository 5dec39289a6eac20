"""The thing's own page: the static site, its feeds, and the [web] server.

Real parts throughout: the file publisher writing a real archive with JPEGs, a real
SQLite outbox, the real HTTP server on a free loopback port, a real daemon and broker
for the metrics; feeds checked by feedparser and the JSON Feed 1.1 schema.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.secrets import register_secret
from gateway.demo.broker import Broker
from gateway.model import Post
from gateway.outbox.store import Outbox
from gateway.publishers.file import read_archive
from gateway.runtime.loading import validate_config
from gateway.runtime.web import WebServer
from tests.gwutil import base_config, publish, start_gateway, wait_until
from tests.sitehelp import ARABIC, HOSTILE, jpeg_item, post, raw_get, site_publisher
from tests.sitehelp import publish as archive

SCHEMA = Path(__file__).parent / "data" / "jsonfeed-1.1.schema.json"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An archive of 7 posts (per_page 3): a photo, a hostile text, an Arabic one."""
    folder = tmp_path / "state" / "posts"
    pub = site_publisher(folder)
    archive(
        pub, post(0, "Pool is open https://pool.example/hours #swim", (jpeg_item(tmp_path, 0),))
    )
    archive(pub, post(1, f"Water {HOSTILE} °C"))
    archive(pub, post(2, ARABIC, (jpeg_item(tmp_path, 2),), lang="ar"))
    for n in range(3, 7):
        archive(pub, post(n, f"Reading {n}"))
    return folder


def test_site_pages_escape_values_and_mark_language(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    hostile = (site / "posts" / "post00001.html").read_text(encoding="utf-8")
    assert HOSTILE not in hostile
    assert "Water &lt;script&gt;alert(1)&lt;/script&gt; °C" in hostile
    assert index.index("Reading 6") < index.index("Reading 4")  # newest first
    assert "Reading 3" not in index  # per_page = 3
    arabic = (site / "posts" / "post00002.html").read_text(encoding="utf-8")
    assert '<html lang="ar">' in arabic
    assert '<article lang="ar" dir="auto"' in arabic
    assert 'alt="The pool, frame 2" width="320" height="240"' in arabic
    assert 'src="../media/post00002-0.jpg"' in arabic  # relative: works from file://
    first = (site / "posts" / "post00000.html").read_text(encoding="utf-8")
    assert '<a href="https://pool.example/hours" rel="nofollow noopener">' in first
    assert '<a class="tag" href="#tag-swim">#swim</a>' in first
    assert "<script" not in first + arabic + index + hostile
    css = (site / "style.css").read_text(encoding="utf-8")
    assert "prefers-color-scheme: dark" in css


def test_full_pages_are_never_rewritten(site: Path, tmp_path: Path) -> None:
    pages = sorted(p.name for p in (site / "page").iterdir())
    assert pages == ["1.html", "2.html"]
    page1 = site / "page" / "1.html"
    before = (page1.stat().st_mtime_ns, page1.read_bytes())
    assert b"post00000" in before[1]
    assert b"post00003" not in before[1]
    pub = site_publisher(site)  # a restart: the site state is read back, not rebuilt
    time.sleep(0.01)
    for n in range(7, 10):
        archive(pub, post(n, f"Reading {n}"))
    assert (page1.stat().st_mtime_ns, page1.read_bytes()) == before
    assert (site / "page" / "3.html").exists()
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="page/3.html">Older posts' in index
    # no temp files left behind by the atomic writes
    assert not [p for p in site.rglob(".*.tmp")]


def test_a_lost_site_state_is_rebuilt_from_the_archive(site: Path) -> None:
    index = (site / "index.html").read_bytes()
    (site / "site.json").unlink()
    (site / "index.html").unlink()
    pub = site_publisher(site)
    pub._known_ids()  # what the first delivery after a start does
    assert (site / "index.html").read_bytes() == index


def test_feeds_parse_and_validate(site: Path) -> None:
    atom = feedparser.parse((site / "feed.xml").read_bytes())
    assert not atom.bozo, atom.bozo_exception
    assert atom.version == "atom10"
    assert atom.feed.id
    assert atom.feed.title == "Pool"
    assert atom.feed.updated
    assert len(atom.entries) == 7
    for entry in atom.entries:
        assert entry.id
        assert entry.title
        assert entry.updated
        assert entry.link
    photo = next(e for e in atom.entries if e.id.endswith("post00000"))
    assert photo.enclosures[0].type == "image/jpeg"
    assert int(photo.enclosures[0].length) > 1000
    hostile = next(e for e in atom.entries if e.id.endswith("post00001"))
    assert HOSTILE in hostile.title  # text, escaped in the XML, back as text
    feed = json.loads((site / "feed.json").read_text(encoding="utf-8"))
    jsonschema.validate(feed, json.loads(SCHEMA.read_text(encoding="utf-8")))
    items = {i["id"]: i for i in feed["items"]}
    assert items["post00002"]["language"] == "ar"
    assert items["post00002"]["attachments"][0]["mime_type"] == "image/jpeg"
    assert HOSTILE in items["post00001"]["content_text"]
    assert HOSTILE not in items["post00001"]["content_html"]


# -- the server ---------------------------------------------------------------------


SITE_PUBLISHER = """[[publishers]]
id = "archive"
type = "file"
path = "posts"
site = true
"""


def _config(state: Path, extra: str = "") -> str:
    return f"""
[gateway]
name = "pool"
state_dir = "{state}"

[[sensors]]
id = "water"
topic = "pool/water"
unit = "°C"

[[rules]]
id = "poolcam"
every = "1h"
text = "Water {{{{ water }}}}"
publish_to = ["archive"]

{SITE_PUBLISHER}
{extra}
"""


def _server(state: Path, extra: str = "") -> WebServer:
    import tomllib

    config = validate_config(tomllib.loads(_config(state, extra)))
    server = WebServer(config, ("127.0.0.1", 0), running=lambda: False)
    server.start_thread()
    return server


@pytest.fixture
def server(site: Path) -> Iterator[WebServer]:
    state = site.parent
    (state / "gateway.db").write_bytes(b"SQLite format 3\x00 secret")
    srv = _server(state)
    yield srv
    srv.stop()


def test_server_serves_the_site_and_refuses_paths_out_of_it(
    server: WebServer, site: Path, tmp_path: Path
) -> None:
    port = server.server_address[1]
    status, body = raw_get(port, "/")
    assert status == 200
    assert b"Reading 6" in body
    assert raw_get(port, "/posts/post00002.html")[0] == 200
    assert raw_get(port, "/media/post00002-0.jpg")[1][:2] == b"\xff\xd8"
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", site / "link.txt")
    os.symlink(tmp_path, site / "linkdir")
    for path in (
        "/../gateway.db",
        "/%2e%2e/gateway.db",
        "/%2E%2E/%2e%2e/outside.txt",
        "/posts/../../gateway.db",
        "/..%2fgateway.db",
        "//etc/passwd",
        "/etc/passwd",
        f"/{site.parent}/gateway.db",
        "/link.txt",
        "/linkdir/outside.txt",
        "/media/",  # no directory listing
        "/%00",
    ):
        status, body = raw_get(port, path)
        assert status == 404, path
        assert b"secret" not in body
        assert b"outside" not in body


def _send_body(port: int, method: str, size: int) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        head = f"{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode())
        # the server may close before reading it: refused either way
        with contextlib.suppress(OSError):
            sock.sendall(b"x" * min(size, 1 << 20))
        reply = sock.recv(200)
    finally:
        sock.close()
    return int(reply.split(b" ")[1])


def test_a_10_mb_request_body_is_refused(server: WebServer) -> None:
    port = server.server_address[1]
    assert _send_body(port, "POST", 10 * 1024 * 1024) == 413
    assert _send_body(port, "GET", 10 * 1024 * 1024) == 413
    assert raw_get(port, "/")[0] == 200  # and the server goes on


def test_status_masks_secrets_and_shows_hostile_values_as_text(site: Path) -> None:
    state = site.parent
    register_secret("hunter2-token")
    outbox = Outbox(state / "gateway.db")
    p = Post("p1", "poolcam", datetime.now(UTC), "hi", (), "en")
    outbox.add(p, {"archive": "hi"})
    delivery = outbox.next_delivery("archive")
    assert delivery is not None
    outbox.mark_failed(delivery, "POST https://h.example/?access_token=hunter2-token: 500", 0)
    outbox.close()
    (state / "state.json").write_text(
        json.dumps(
            {"sensors": {"water": {"value": HOSTILE, "unit": "°C", "at": p.created_at.isoformat()}}}
        )
    )
    srv = _server(state)
    try:
        port = srv.server_address[1]
        status, body = raw_get(port, "/status.json")
        data = json.loads(body)
        assert status == 200
        assert data["publishers"]["archive"]["failed"] == 1
        assert "hunter2" not in body.decode()
        assert "access_token=" in data["publishers"]["archive"]["last_error"]
        assert data["sensors"]["water"]["value"] == HOSTILE
        assert data["sensors"]["water"]["state"] == "offline"  # no daemon running
        html = raw_get(port, "/status")[1].decode()
        assert HOSTILE not in html
        assert "&lt;script&gt;" in html
        assert "hunter2" not in html
        assert "refresh=off" in html
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
            assert r.headers["Refresh"] == "30"  # refreshing itself, without JavaScript
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/kiosk", timeout=5) as r:
            assert r.headers["Refresh"] == "60"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status?refresh=off") as r:
            assert r.headers["Refresh"] is None
        kiosk = raw_get(port, "/kiosk")[1].decode()
        assert HOSTILE not in kiosk
        assert 'src="/media/post00002-0.jpg"' in kiosk
    finally:
        srv.stop()


def test_basic_auth_guards_all_but_the_timeline_and_feeds(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    from gateway.runtime.loading import load_config

    monkeypatch.setenv("WEB_PASSWORD", "s3cret-pw")
    path = site.parent / "auth.toml"
    path.write_text(_config(site.parent, '[web]\npassword = "${WEB_PASSWORD}"\n'))
    config = load_config(path)
    assert tomllib.loads(path.read_text())["web"]["password"] == "${WEB_PASSWORD}"
    srv = WebServer(config, ("127.0.0.1", 0), running=lambda: False)
    srv.start_thread()
    try:
        port = srv.server_address[1]
        for public in (
            "/",
            "/index.html",
            "/feed.xml",
            "/feed.json",
            "/posts/post00001.html",
            "/page/1.html",
            "/media/post00000-0.jpg",
            "/style.css",
        ):
            assert raw_get(port, public)[0] == 200, public
        for private in ("/status", "/status.json", "/metrics", "/kiosk", "/posts.jsonl"):
            assert raw_get(port, private)[0] == 401, private
        wrong = base64.b64encode(b"admin:nope").decode()
        assert raw_get(port, "/status.json", {"Authorization": f"Basic {wrong}"})[0] == 401
        good = base64.b64encode(b"admin:s3cret-pw").decode()
        status, body = raw_get(port, "/status.json", {"Authorization": f"Basic {good}"})
        assert status == 200
        assert b"s3cret" not in body
    finally:
        srv.stop()


# -- the daemon serving its own page: metrics match what was published ------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_daemon_web_metrics_and_status_match_what_was_published(
    broker: Broker, tmp_path: Path, mqtt_topic: str
) -> None:
    state = tmp_path / "state"
    port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, state)
        + f"""
[[sensors]]
id = "water"
topic = "{mqtt_topic}/water"
unit = "°C"

[[rules]]
id = "ev"
on_message = {{ topic = "{mqtt_topic}/events" }}
text = "Event {{{{ event.n }}}} water {{{{ water }}}}"
publish_to = ["archive"]

{SITE_PUBLISHER}
[web]
enabled = true
port = {port}
""",
        encoding="utf-8",
    )
    proc = start_gateway(config)
    try:

        def metrics() -> dict[str, float]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return {}
            out = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
                    out[key] = s.value
            return out

        wait_until(lambda: metrics().get("gateway_mqtt_connected") == 1.0)
        publish(
            broker,
            [
                (f"{mqtt_topic}/water", "21.5"),
                (f"{mqtt_topic}/water", "22.5"),
                (f"{mqtt_topic}/water", "warm"),  # rejected: counted for its sensor
                (f"{mqtt_topic}/water", "23.5"),
            ],
        )
        wait_until(lambda: metrics().get("gateway_readings_total") == 3.0)
        publish(
            broker, [(f"{mqtt_topic}/events", '{"n": 1}'), (f"{mqtt_topic}/events", '{"n": 2}')]
        )
        wait_until(lambda: len(read_archive(state / "posts" / "posts.jsonl")) == 2)
        found = wait_until(
            lambda: (
                (m := metrics()).get("gateway_deliveries,publisher=archive,status=sent") == 2 and m
            )
        )
        assert found["gateway_posts_total,rule=ev"] == 2
        assert found["gateway_outbox_depth"] == 0
        assert found["gateway_rejected_payloads_total"] == 1
        assert found["gateway_sensor_rejected_payloads_total,sensor=water"] == 1
        assert found["gateway_delivery_latency_seconds_count"] == 2
        assert found["gateway_delivery_latency_seconds_bucket,le=+Inf"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as r:
            status = json.loads(r.read())
        assert status["sensors"]["water"]["value"] == 23.5
        assert status["sensors"]["water"]["state"] == "fresh"
        assert status["mqtt_connected"] is True
        assert status["publishers"]["archive"]["sent"] == 2
        index = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "Event 2 water 23.5" in index
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_taken_web_port_is_logged_and_the_daemon_still_posts(
    broker: Broker, tmp_path: Path, mqtt_topic: str
) -> None:
    from tests.gwutil import StderrLines, event_rules

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.toml"
        config.write_text(
            base_config(broker, tmp_path / "state")
            + event_rules(mqtt_topic)
            + f"\n[web]\nenabled = true\nport = {port}\n",
            encoding="utf-8",
        )
        proc = start_gateway(config)
        stderr = StderrLines(proc)
        try:
            wait_until(lambda: stderr.has("[web]: cannot listen on 127.0.0.1"))
            wait_until(lambda: stderr.has("connected to MQTT broker"), timeout=60)
            publish(broker, [(f"{mqtt_topic}/events", '{"n": 7}')])
            posts = wait_until(lambda: read_archive(tmp_path / "state" / "posts" / "posts.jsonl"))
            assert posts[0]["text"] == "Event 7"
        finally:
            proc.terminate()
            proc.wait(20)


def test_serve_command_prints_its_url(site: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    port = _free_port()
    config = tmp_path / "serve.toml"
    config.write_text(_config(site.parent, f"[web]\nport = {port}\n"), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/feed.json")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_timelapse_plays_inline_and_threads_show_every_part() -> None:
    from gateway.publishers.site import post_html

    record = {
        "id": "t1",
        "rule": "timelapse",
        "created_at": "2026-07-01T21:00:00+01:00",
        "text": "part 1",
        "thread": ["part 1", "part 2"],
        "lang": "en",
        "media": [
            {
                "file": "media/t1-0.mp4",
                "mime": "video/mp4",
                "width": 640,
                "height": 480,
                "bytes": 1000,
                "alt": "The day at the pool",
            },
        ],
    }
    html = post_html(record, "")
    assert '<video src="media/t1-0.mp4" width="640" height="480" autoplay muted loop' in html
    record["media"][0]["poster"] = "media/t1-0.poster.jpg"  # type: ignore[index]
    with_poster = post_html(record, "../")
    assert 'height="480" poster="../media/t1-0.poster.jpg" autoplay' in with_poster
    assert 'aria-label="The day at the pool"' in html
    assert "part 2" in html
    assert "2026-07-01 21:00" in html  # the post's own local time


def test_the_daemon_does_not_load_the_web_server_unless_asked() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gateway.cli, gateway.runtime.daemon, gateway.runtime.app;"
        "print('gateway.runtime.web' in sys.modules, 'http.server' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_slow_client_is_cut_off_and_a_crowd_gets_503(tmp_path: Path) -> None:
    """One byte every second holds a request no longer than its deadline; past
    MAX_CONNECTIONS requests at once, the next is answered 503 at once."""
    import socket as socket_module

    import gateway.runtime.web as web

    deadline, cap = web.REQUEST_DEADLINE, web.MAX_CONNECTIONS
    web.REQUEST_DEADLINE, web.MAX_CONNECTIONS = 2.0, 2
    server = _server(tmp_path / "state")
    host, port = server.server_address[:2]
    slow = [socket_module.create_connection((str(host), port)) for _ in range(2)]
    try:
        for s in slow:
            s.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.3)
        with socket_module.create_connection((str(host), port)) as third:
            third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert third.recv(100).startswith(b"HTTP/1.1 503")
        started = time.monotonic()
        s = slow[0]
        s.settimeout(10)
        while True:  # trickle header lines until the server hangs up
            try:
                s.sendall(b"X-Slow: 1\r\n")
                if not s.recv(1, socket_module.MSG_PEEK | socket_module.MSG_DONTWAIT):
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            time.sleep(0.5)
            assert time.monotonic() - started < 8, "the slow request was never cut off"
        # both slow requests were cut off: their slots are free, a normal request is served

        def served() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5):
                    return True
            except OSError:
                return False

        wait_until(served, timeout=5)
    finally:
        for s in slow:
            s.close()
        server.stop()
        web.REQUEST_DEADLINE, web.MAX_CONNECTIONS = deadline, cap
