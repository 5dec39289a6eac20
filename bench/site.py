"""The thing's page: updating the site after one post, and serving ``/status.json``.

Run from the repository: ``python bench/site.py [--runs 5] [--seconds 3]``.

1. Update time.  Archives of 100, 1,000 and 10,000 posts (``posts.jsonl`` in the
   archive format, every third post with a JPEG) get their site built once; then,
   ``--runs`` times, one more post is archived by the ``file`` publisher with
   ``site = true``.  Printed per archive size, median and range: the whole delivery
   (archive line with its fsync, media copy, site update) and the site update alone,
   beside the same-run baseline of the same delivery by a ``file`` publisher without
   a site.  Target: the site update <= 50 ms and flat across archive sizes.
2. Serving.  ``things-gateway serve`` on the 10,000-post archive, and beside it
   ``python -m http.server`` serving the same folder (with ``status.json`` saved from
   the gateway's answer, so both send a document of the same size).  Four client
   threads, one connection per request, ``--seconds`` per run: requests per second
   for ``/status.json`` and each server's RSS after the load, median and range.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.model import MediaItem, Post
from gateway.publishers.file import FilePublisher, read_archive
from gateway.publishers.site import SiteBuilder
from tests.mediautil import scene_jpeg

SIZES = (100, 1_000, 10_000)
START = datetime(2026, 1, 1, tzinfo=UTC)


def _stat(values: list[float], unit: str, scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return f"{statistics.median(v):9.1f} {unit} ({min(v):.1f}..{max(v):.1f})"


def make_archive(folder: Path, n: int, jpeg: bytes) -> None:
    """``n`` posts in the archive format, every third one with a JPEG."""
    (folder / "media").mkdir(parents=True, exist_ok=True)
    with open(folder / "posts.jsonl", "w", encoding="utf-8") as out:
        for i in range(n):
            media = []
            if i % 3 == 0:
                name = f"media/p{i:06d}-0.jpg"
                (folder / name).write_bytes(jpeg)
                media = [
                    {
                        "file": name,
                        "mime": "image/jpeg",
                        "width": 320,
                        "height": 240,
                        "bytes": len(jpeg),
                        "alt": f"The pool, frame {i}",
                    }
                ]
            record = {
                "id": f"p{i:06d}",
                "rule": "poolcam",
                "created_at": (START + timedelta(minutes=i)).isoformat(),
                "text": f"Water {20 + i % 7}.5 °C #poolcam",
                "lang": "en",
                "media": media,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def time_updates(root: Path, n: int, runs: int, jpeg_item: MediaItem) -> dict[str, list[float]]:
    """Seconds per delivery (with and without site) and for the site update alone."""
    with_site, plain = root / f"site-{n}", root / f"plain-{n}"
    make_archive(with_site, n, jpeg_item.path.read_bytes())
    make_archive(plain, n, jpeg_item.path.read_bytes())
    builder = SiteBuilder(with_site, title="Pool", per_page=20)
    site_pub = FilePublisher("archive", with_site, site=builder)
    plain_pub = FilePublisher("archive", plain)
    site_pub._known_ids()  # the start: ids read, site built or loaded
    plain_pub._known_ids()
    out: dict[str, list[float]] = {"delivery": [], "site": [], "baseline": []}
    original_add = builder.add

    def timed_add(record: dict[str, object]) -> None:
        t = time.perf_counter()
        original_add(record)
        out["site"].append(time.perf_counter() - t)

    builder.add = timed_add  # type: ignore[method-assign]
    for k in range(runs):
        media = (jpeg_item,) if k % 2 == 0 else ()
        at = START + timedelta(minutes=n + k)
        for pub, key in ((plain_pub, "baseline"), (site_pub, "delivery")):
            post = Post(f"new{k:04d}", "poolcam", at, f"Water {k}.5 °C", media, "en")
            t = time.perf_counter()
            pub.publish_thread(post, (post.text,), post.media, post.id)
            out[key].append(time.perf_counter() - t)
    assert len(read_archive(with_site / "posts.jsonl")) == n + runs
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
        return body
    finally:
        conn.close()


def load(port: int, path: str, seconds: float, threads: int = 4) -> float:
    """Requests per second, one connection per request, ``threads`` clients."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop:
            _get(port, path)
            counts[i] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - t)


def rss(pid: int) -> float:
    """Resident set size of a process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


def bench_serving(root: Path, runs: int, seconds: float) -> None:
    """``things-gateway serve`` vs ``python -m http.server`` for /status.json."""
    state = root / "serve-state"
    site = state / "posts"
    make_archive(site, 10_000, scene_jpeg(size=(320, 240)))
    FilePublisher("archive", site, site=SiteBuilder(site, title="Pool"))._known_ids()
    ours, theirs = _free_port(), _free_port()
    config = root / "serve.toml"
    config.write_text(
        f'[gateway]\nname = "pool"\nstate_dir = "{state}"\n\n'
        '[[sensors]]\nid = "water"\ntopic = "pool/water"\nunit = "°C"\n\n'
        '[[rules]]\nid = "poolcam"\nevery = "1h"\ntext = "Water {{ water }}"\n'
        'publish_to = ["archive"]\n\n'
        '[[publishers]]\nid = "archive"\ntype = "file"\npath = "posts"\nsite = true\n\n'
        f"[web]\nport = {ours}\n",
        encoding="utf-8",
    )
    exe = Path(sys.executable).with_name("things-gateway")
    gw = subprocess.Popen([str(exe), "serve", "-c", str(config)], stdout=subprocess.DEVNULL)
    std = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(theirs),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(site),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(ours)
        _wait_port(theirs)
        (site / "status.json").write_bytes(_get(ours, "/status.json"))
        results: dict[str, dict[str, list[float]]] = {
            "things-gateway serve": {"rps": [], "rss": []},
            "python -m http.server": {"rps": [], "rss": []},
        }
        for _ in range(runs):
            for name, port, proc in (
                ("things-gateway serve", ours, gw),
                ("python -m http.server", theirs, std),
            ):
                results[name]["rps"].append(load(port, "/status.json", seconds))
                results[name]["rss"].append(rss(proc.pid))
        size = (site / "status.json").stat().st_size
        print(f"\n/status.json ({size} bytes), 4 clients, {seconds:g} s x {runs} runs:")
        for name, r in results.items():
            print(
                f"  {name:<24} {_stat(r['rps'], 'req/s')}   RSS {_stat(r['rss'], 'MiB', 1 / 2**20)}"
            )
    finally:
        for proc in (gw, std):
            proc.terminate()
            proc.wait(10)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jpeg = root / "frame.jpg"
        data = scene_jpeg(size=(320, 240))
        jpeg.write_bytes(data)
        item = MediaItem(jpeg, "image/jpeg", 320, 240, len(data), "The pool")
        print(f"one more post, {args.runs} runs per archive size (median (min..max)):")
        print(
            f"  {'posts':>6}  {'site update alone':<28} {'delivery with site':<28} "
            "baseline: delivery without site"
        )
        for n in SIZES:
            r = time_updates(root, n, args.runs, item)
            site, delivery = _stat(r["site"], "ms", 1e3), _stat(r["delivery"], "ms", 1e3)
            print(f"  {n:>6}  {site:<28} {delivery:<28} {_stat(r['baseline'], 'ms', 1e3)}")
        bench_serving(root, args.runs, args.seconds)
    os.sync()


if __name__ == "__main__":
    main()
