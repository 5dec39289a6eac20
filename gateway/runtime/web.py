"""``things-gateway serve``: the thing's page and its live status over HTTP (``[web]``).

A separate, read-only process beside the daemon (the daemon itself never imports
this module, so its memory does not grow when nobody serves the page).  It serves the
static site the ``file`` publisher keeps (``site = true``) and builds, on each request,
from the database the daemon writes (read-only) and ``state.json``:

- ``/status`` (HTML, refreshing itself) and ``/status.json``: sensors, rules, outbox;
- ``/metrics``: the Prometheus text format;
- ``/kiosk``: the newest photo full-screen with the current values large.

The standard library's ``ThreadingHTTPServer``: GET and HEAD only, request bodies
refused, a timeout per read and a deadline per request, at most
:data:`MAX_CONNECTIONS` requests at once, no directory listing; a path that leaves the site
folder (``..``, ``%2e%2e``, absolute paths, symlinks pointing out) is a 404.  With
``[web] password`` set, everything but the public timeline and feeds asks for basic
auth, compared in constant time.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import html
import json
import mimetypes
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from gateway.config import FileConfig, GatewayConfig, RuleConfig
from gateway.config.secrets import redact
from gateway.runtime.health import HEALTH_KEY, HealthStore
from gateway.runtime.paths import database_path, pid_file
from gateway.state.snapshot import SNAPSHOT_NAME, read_snapshot

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

MAX_BODY = 64 * 1024
"""Largest request body accepted (none is needed: every route is a GET)."""
REQUEST_TIMEOUT = 10.0
"""Seconds one read or write of a connection may wait."""
REQUEST_DEADLINE = 30.0
"""Seconds a whole request may take, however slowly its bytes arrive: then the
connection is shut (a client sending one byte every few seconds holds no thread long)."""
MAX_CONNECTIONS = 16
"""Requests served at once; one more gets 503 at once (each holds a thread)."""
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
PUBLIC = ("/", "/index.html", "/feed.xml", "/feed.json", "/style.css")
PUBLIC_PREFIXES = ("/page/", "/posts/", "/media/")
STALE_GRACE = timedelta(minutes=10)


def daemon_running(config: GatewayConfig) -> bool:
    """Whether the daemon's PID file names a live gateway process."""
    try:
        pid = int(pid_file(config).read_text().strip())
        return b"gateway" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def site_folder(config: GatewayConfig) -> Path | None:
    """The archive folder of the ``file`` publisher whose site is served, if any."""
    for publisher in config.publishers:
        if not isinstance(publisher, FileConfig) or not publisher.site:
            continue
        if config.web.site not in (None, publisher.id):
            continue
        folder = Path(publisher.path)
        return folder if folder.is_absolute() else config.gateway.resolved_state_dir() / folder
    return None


def _age(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    try:
        return max(0.0, (now - datetime.fromisoformat(iso)).total_seconds())
    except ValueError:
        return None


def _live_sensors(gateway: Gateway, now: datetime) -> dict[str, dict[str, Any]]:
    snaps = gateway.state.sensors()
    out = {}
    for sensor in gateway.config.sensors:
        snap = snaps.get(sensor.id)
        out[sensor.id] = {
            "value": snap.value if snap else None,
            "unit": (snap.unit if snap else None) or sensor.unit or "",
            "at": snap.at.isoformat(timespec="seconds") if snap else None,
            "stale": gateway.state.is_stale(sensor.id, now),
        }
    return out


def status_data(
    config: GatewayConfig,
    now: datetime | None = None,
    *,
    gateway: Gateway | None = None,
    running: bool = True,
) -> dict[str, Any]:
    """What ``/status.json`` shows: sensors, rules, publishers (secrets masked).

    With ``gateway`` (the server runs in the daemon) sensor values are live; without,
    they are the daemon's last saved ones (``state.json`` and the health row).
    """
    now = now or datetime.now(UTC)
    running = running or gateway is not None
    db = database_path(config)
    health: dict[str, Any] = {}
    summary = None
    if db.exists():
        store = HealthStore(db, read_only=True)
        try:
            health, summary = store.read() or {}, store.summary()
        finally:
            store.close()
    errors = _last_errors(db) if db.exists() else {}
    if gateway is not None:
        seen = saved = _live_sensors(gateway, now)
    else:
        snapshot = read_snapshot(config.gateway.resolved_state_dir() / SNAPSHOT_NAME) or {}
        saved = snapshot.get("sensors") or {}
        seen = health.get("sensors") or {}
    sensors = {}
    for sensor in config.sensors:
        value = saved.get(sensor.id) or {}
        last_at = (seen.get(sensor.id) or {}).get("last_at") or value.get("at")
        if not running or last_at is None:
            state = "offline"
        elif (seen.get(sensor.id) or {}).get("stale"):
            state = "stale"
        else:
            state = "fresh"
        sensors[sensor.id] = {
            "value": value.get("value"),
            "unit": value.get("unit") or sensor.unit or "",
            "at": last_at,
            "age_seconds": _age(last_at, now),
            "state": state,
        }
    rules = {}
    last_posts = summary.last_post_per_rule if summary else {}
    for rule in config.rules:
        last = last_posts.get(rule.id)
        rules[rule.id] = {"last_post_at": last, "next_due": _next_due(rule, last, now)}
    publishers = {}
    for publisher in config.publishers:
        counts = summary.per_publisher.get(publisher.id, {}) if summary else {}
        publishers[publisher.id] = {
            "enabled": publisher.enabled,
            "pending": counts.get("pending", 0) + counts.get("sending", 0),
            "failed": counts.get("failed", 0),
            "dead": counts.get("dead", 0),
            "sent": counts.get("sent", 0),
            "last_error": redact(errors.get(publisher.id) or "") or None,
        }
    mqtt = health.get("mqtt") or {}
    if gateway is not None:
        mqtt = {"connected": gateway.ingest.connected.is_set()}
    return {
        "gateway": config.gateway.name,
        "running": running,
        "mqtt_connected": bool(running and mqtt.get("connected")),
        "health_written_at": health.get("written_at"),
        "sensors": sensors,
        "rules": rules,
        "publishers": publishers,
    }


def _last_errors(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT publisher, last_error FROM deliveries WHERE last_error IS NOT NULL"
            " AND status != 'sent' ORDER BY updated_at"
        ).fetchall()
    finally:
        conn.close()
    return {row[0]: row[1] for row in rows}


def _next_due(rule: RuleConfig, last: str | None, now: datetime) -> str | None:
    if rule.every is not None:
        base = datetime.fromisoformat(last) if last else now
        due = max(base + rule.every, now)
        return due.isoformat(timespec="seconds")
    if rule.cron:
        from apscheduler.triggers.cron import CronTrigger

        try:
            fire = CronTrigger.from_crontab(rule.cron).get_next_fire_time(None, now)
        except ValueError:
            return None
        return fire.isoformat(timespec="seconds") if isinstance(fire, datetime) else None
    return None  # event rules: when their condition or message comes


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(
    config: GatewayConfig, *, gateway: Gateway | None = None, running: bool = True
) -> str:
    """The Prometheus text exposition of the gateway's counters.

    With ``gateway`` the ingest counters are live, else as of the last health row.
    """
    lines: list[str] = []

    def metric(name: str, kind: str, helptext: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {helptext}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    db = database_path(config)
    health: dict[str, Any] = {}
    per_sensor: list[tuple[str, float]] = []
    posts: list[tuple[str, float]] = []
    deliveries: list[tuple[str, float]] = []
    depth = 0.0
    buckets: list[tuple[str, float]] = []
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            health = _health(conn)
            for sensor, n in conn.execute(
                "SELECT sensor, SUM(count) FROM readings_minute GROUP BY sensor ORDER BY sensor"
            ):
                per_sensor.append((f'{{sensor="{_label(sensor)}"}}', float(n)))
            for rule, n in conn.execute("SELECT rule, COUNT(*) FROM posts GROUP BY rule"):
                posts.append((f'{{rule="{_label(rule)}"}}', float(n)))
            for pub, status, n in conn.execute(
                "SELECT publisher, status, COUNT(*) FROM deliveries GROUP BY publisher, status"
            ):
                deliveries.append((f'{{publisher="{_label(pub)}",status="{status}"}}', float(n)))
                if status in ("pending", "sending", "failed"):
                    depth += n
            buckets = _latency(conn)
        finally:
            conn.close()
    connected = running and bool((health.get("mqtt") or {}).get("connected"))
    rejected: list[tuple[str, float]] = []
    if gateway is not None:
        stats = gateway.ingest.stats
        health = {"readings": stats.readings, "rejected": stats.rejected}
        connected = gateway.ingest.connected.is_set()
        counters = sorted(gateway.state.counters().items())
        rejected = [(f'{{sensor="{_label(k)}"}}', float(c.rejected)) for k, c in counters]
    metric(
        "gateway_readings_total",
        "counter",
        "Readings accepted since the daemon started.",
        [("", float(health.get("readings") or 0))],
    )
    metric(
        "gateway_rejected_payloads_total",
        "counter",
        "Payloads rejected (bad input) since the daemon started.",
        [("", float(health.get("rejected") or 0))],
    )
    metric(
        "gateway_sensor_rejected_payloads_total",
        "counter",
        "Payloads rejected per sensor since the daemon started ([web] in the daemon only).",
        rejected,
    )
    metric(
        "gateway_sensor_readings_total",
        "counter",
        "Readings per sensor in the history (flushed per minute).",
        per_sensor,
    )
    metric("gateway_posts_total", "counter", "Posts per rule.", posts)
    metric("gateway_deliveries", "gauge", "Deliveries per publisher and status.", deliveries)
    metric("gateway_outbox_depth", "gauge", "Deliveries waiting.", [("", depth)])
    lines.append("# HELP gateway_delivery_latency_seconds From post to sent delivery.")
    lines.append("# TYPE gateway_delivery_latency_seconds histogram")
    lines.extend(f"gateway_delivery_latency_seconds{lab} {v:g}" for lab, v in buckets)
    metric(
        "gateway_mqtt_connected",
        "gauge",
        "1 when the daemon is connected to the broker.",
        [("", 1.0 if connected else 0.0)],
    )
    return "\n".join(lines) + "\n"


def remote_links(config: GatewayConfig, post_id: str) -> list[tuple[str, str]]:
    """(publisher, http(s) URL) of each service a post reached, from the outbox."""
    db = database_path(config)
    if not db.exists():
        return []
    local = {p.id for p in config.publishers if isinstance(p, FileConfig)}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(
                "SELECT publisher, url FROM deliveries WHERE post_id = ? AND status = 'sent'"
                " AND url IS NOT NULL ORDER BY publisher",
                (post_id,),
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []  # the page without the links rather than no page
    return [
        (str(pub), str(url))
        for pub, url in rows
        if pub not in local and str(url).startswith(("https://", "http://"))
    ]


def _health(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT value FROM kv WHERE key=?", (HEALTH_KEY,)).fetchone()
    return dict(json.loads(row[0])) if row else {}


def _latency(conn: sqlite3.Connection) -> list[tuple[str, float]]:
    latency = "(d.updated_at - (julianday(p.created_at) - 2440587.5) * 86400.0)"
    cases = ", ".join(f"SUM({latency} <= {b})" for b in LATENCY_BUCKETS)
    row = conn.execute(
        f"SELECT {cases}, COUNT(*), COALESCE(SUM({latency}), 0) FROM deliveries d"  # noqa: S608
        " JOIN posts p ON p.id = d.post_id WHERE d.status = 'sent'"
    ).fetchone()
    out = [
        (f'_bucket{{le="{b:g}"}}', float(n or 0))
        for b, n in zip(LATENCY_BUCKETS, row, strict=False)
    ]
    count, total = float(row[-2] or 0), float(row[-1] or 0)
    out += [('_bucket{le="+Inf"}', count), ("_sum", max(total, 0.0)), ("_count", count)]
    return out


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


STATUS_REFRESH = 30
KIOSK_REFRESH = 60


def _page(title: str, body: str, extra_style: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_esc(title)}</title>"
        '<link rel="stylesheet" href="/style.css">'
        f"<style>table{{border-collapse:collapse}}td,th{{padding:.2rem .6rem;text-align:left}}"
        f"{extra_style}</style></head><body><main>{body}</main></body></html>\n"
    )


def status_html(data: dict[str, Any]) -> str:
    """``/status``: the same as ``/status.json``, as tables; reloads every 30 s."""
    run = "running" if data["running"] else "not running"
    mqtt = "connected" if data["mqtt_connected"] else "not connected"
    rows = "".join(
        f'<tr><th scope="row">{_esc(sid)}</th><td>{_esc(s["value"])} {_esc(s["unit"])}</td>'
        f"<td>{_esc(_ago(s['age_seconds']))}</td><td>{_esc(s['state'])}</td></tr>"
        for sid, s in data["sensors"].items()
    )
    rules = "".join(
        f'<tr><th scope="row">{_esc(rid)}</th><td>{_esc(r["last_post_at"] or "never")}</td>'
        f"<td>{_esc(r['next_due'] or 'on its event')}</td></tr>"
        for rid, r in data["rules"].items()
    )
    pubs = "".join(
        f'<tr><th scope="row">{_esc(pid)}</th><td>{p["pending"]}</td><td>{p["failed"]}</td>'
        f"<td>{p['dead']}</td><td>{_esc(p['last_error'] or '')}</td></tr>"
        for pid, p in data["publishers"].items()
    )
    body = (
        f"<h1>{_esc(data['gateway'])}: {run}, broker {mqtt}</h1>"
        '<p><a href="/">Timeline</a> · <a href="/kiosk">Kiosk</a> · '
        '<a href="/status.json">JSON</a> · <a href="/metrics">Metrics</a> · '
        f'<a href="/status?refresh=off">Stop refreshing (every {STATUS_REFRESH} s)</a></p>'
        "<h2>Sensors</h2><table><tr><th>sensor</th><th>value</th><th>age</th><th>state</th>"
        f"</tr>{rows}</table>"
        "<h2>Rules</h2><table><tr><th>rule</th><th>last post</th><th>next due</th></tr>"
        f"{rules}</table>"
        "<h2>Publishers</h2><table><tr><th>publisher</th><th>pending</th><th>failed</th>"
        f"<th>dead</th><th>last error</th></tr>{pubs}</table>"
    )
    return _page(f"{data['gateway']} status", body)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def kiosk_html(data: dict[str, Any], site: Path | None) -> str:
    """``/kiosk``: the newest photo full-screen, the current values large; reloads every 60 s."""
    photo = ""
    if site is not None:
        try:
            recent = json.loads((site / "site.json").read_text(encoding="utf-8"))["recent"]
        except (OSError, ValueError, KeyError, TypeError):
            recent = []
        for record in reversed(recent):
            images = [
                m for m in record.get("media") or [] if str(m.get("mime", "")).startswith("image/")
            ]
            if images:
                m = images[0]
                photo = (
                    f'<img src="/{_esc(m.get("file", ""))}"'
                    f' alt="{_esc(m.get("alt") or "newest photo")}"'
                    f' width="{int(m.get("width") or 0)}" height="{int(m.get("height") or 0)}">'
                )
                break
    values = "".join(
        f"<div><span>{_esc(sid)}</span> <b>{_esc(s['value'])} {_esc(s['unit'])}</b></div>"
        for sid, s in data["sensors"].items()
    )
    style = (
        "body{max-width:none;margin:0;padding:0;background:#000;color:#fff}"
        "main img{width:100vw;height:100vh;object-fit:contain;display:block}"
        "#values{position:fixed;left:0;right:0;bottom:0;padding:1rem 2rem;"
        "background:rgba(0,0,0,.7);font-size:3rem;display:flex;gap:3rem;flex-wrap:wrap}"
        "#values span{font-size:1.5rem;color:#ddd}"
    )
    body = (
        f'<h1 style="position:absolute;left:-9999px">{_esc(data["gateway"])}</h1>'
        f'{photo}<div id="values">{values}</div>'
    )
    return _page(f"{data['gateway']}", body, style)


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    timeout = REQUEST_TIMEOUT
    server_version = "things-gateway"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the daemon's journal is not for page views."""

    def setup(self) -> None:
        """Start the request's deadline (:data:`REQUEST_DEADLINE`)."""
        super().setup()
        self._deadline = threading.Timer(REQUEST_DEADLINE, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        """Cancel the deadline."""
        self._deadline.cancel()
        super().finish()

    def _expire(self) -> None:
        """The request took too long: shut the connection (its reads and writes end)."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_POST(self) -> None:
        self._refuse_body()

    def do_PUT(self) -> None:
        self._refuse_body()

    def do_DELETE(self) -> None:
        self._refuse_body()

    def _refuse_body(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        too_big = not length.isdigit() or int(length) > MAX_BODY
        self.close_connection = True
        if too_big:
            self.send_error(413, "Request body too large")
        else:
            self.send_error(405, "Read-only")

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        length = self.headers.get("Content-Length")
        if length not in (None, "0"):
            self._refuse_body()
            return
        path = urlsplit(self.path).path
        if not self._allowed(path):
            return
        srv = self.server
        routes: dict[str, Callable[[], tuple[str, bytes]]] = {
            "/status.json": lambda: (
                "application/json",
                json.dumps(srv.status(), ensure_ascii=False).encode(),
            ),
            "/status": lambda: ("text/html; charset=utf-8", status_html(srv.status()).encode()),
            "/kiosk": lambda: (
                "text/html; charset=utf-8",
                kiosk_html(srv.status(), srv.site).encode(),
            ),
            "/metrics": lambda: (
                "text/plain; version=0.0.4; charset=utf-8",
                metrics_text(srv.config, gateway=srv.gateway, running=srv.running()).encode(),
            ),
        }
        if path in routes:
            kind, body = routes[path]()
            # An HTTP Refresh header, not <meta refresh>: ?refresh=off stops it (WCAG 2.2.1)
            every = {"/status": STATUS_REFRESH, "/kiosk": KIOSK_REFRESH}.get(path)
            if "refresh=off" in urlsplit(self.path).query:
                every = None
            self._send(200, kind, body, head, cache="no-store", refresh=every)
            return
        target = self._resolve(path)
        if target is None and path in ("/", "/index.html"):
            # the site is written with the first post; until then, say so
            title = html.escape(self.server.config.gateway.name)
            body = (
                f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<link rel="icon" href="data:,"><title>{title}</title></head>'
                f"<body><main><h1>{title}</h1><p>No posts yet.</p></main></body></html>\n"
            ).encode()
            self._send(200, "text/html; charset=utf-8", body, head, cache="no-store")
            return
        if target is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n", head)
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith(("json", "xml")):
            kind += "; charset=utf-8"
        body = target.read_bytes()
        if target.parent == self.server.real_root / "posts" and target.suffix == ".html":
            body = self._with_remote_links(target.stem, body)
        self._send(200, kind, body, head)

    def _with_remote_links(self, post_id: str, page: bytes) -> bytes:
        """A permalink page plus links to the same post on each service it reached.

        The archive is written before the other services answer, so their links come
        from the outbox when the page is served."""
        # the daemon writes the links it learns into the page; add those it has not
        links = [
            (pub, url)
            for pub, url in remote_links(self.server.config, post_id)
            if _esc(url).encode() not in page
        ]
        if not links:
            return page
        items = " · ".join(
            f'<a href="{_esc(url)}" rel="nofollow noopener">on {_esc(pub)}</a>'
            for pub, url in links
        )
        nav = f'<p class="meta remote">Also {items}</p>'.encode()
        return page.replace(b"</main>", nav + b"</main>", 1)

    def _allowed(self, path: str) -> bool:
        password = self.server.password
        if password is None or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            return True
        header = self.headers.get("Authorization") or ""
        given = b""
        if header.startswith("Basic "):
            try:
                given = base64.b64decode(header[6:], validate=True)
            except ValueError:
                given = b""
        expected = f"{self.server.user}:{password}".encode()
        if hmac.compare_digest(given, expected):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="things-gateway", charset="UTF-8"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _resolve(self, raw: str) -> Path | None:
        """The file under the site folder ``raw`` names, or None (404)."""
        root = self.server.site
        if root is None:
            return None
        path = unquote(raw)
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or p.startswith(".") for p in parts):
            return None
        target = root.joinpath(*parts) if parts else root
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real != self.server.real_root and self.server.real_root not in real.parents:
            return None
        if real.is_dir():
            real = real / "index.html"
            if not real.is_file():
                return None  # no directory listing
        return real if real.is_file() else None

    def _send(
        self,
        code: int,
        kind: str,
        body: bytes,
        head: bool,
        cache: str = "",
        refresh: int | None = None,
    ) -> None:
        self.send_response(code)
        if refresh:
            self.send_header("Refresh", str(refresh))
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if cache:
            self.send_header("Cache-Control", cache)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class WebServer(ThreadingHTTPServer):
    """The HTTP server of ``things-gateway serve``."""

    daemon_threads = True
    request_queue_size = 16

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was cut off) is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a thread if fewer than :data:`MAX_CONNECTIONS` are busy, else 503."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """One request in its thread; its slot is given back when it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def __init__(
        self,
        config: GatewayConfig,
        address: tuple[str, int] | None = None,
        *,
        gateway: Gateway | None = None,
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.running = running
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.site = site_folder(config)
        self.real_root = self.site.resolve() if self.site else Path("/nonexistent")
        secret = config.web.password
        self.password = secret.get_secret_value() if secret is not None else None
        self.user = config.web.user
        super().__init__(address or (config.web.bind, config.web.port), _Handler)

    def status(self) -> dict[str, Any]:
        """``/status.json``'s content now."""
        return status_data(self.config, gateway=self.gateway, running=self.running())

    def start_thread(self) -> None:
        """Serve from a daemon thread (in the gateway daemon or the demo)."""
        threading.Thread(target=self.serve_forever, name="web", daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


def serve(config: GatewayConfig) -> int:
    """Run the server beside the daemon until interrupted."""
    server = WebServer(config, running=lambda: daemon_running(config))
    print(f"serving {config.gateway.name} at {server.url}", flush=True)
    if server.site is None:
        print("no file publisher has site = true: only /status, /kiosk and /metrics", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


__all__ = ["WebServer", "metrics_text", "serve", "site_folder", "status_data"]
