"""The thing's page in a real browser: Debian's headless Chromium driven by Playwright.

Opens the timeline, a permalink, /status and the kiosk page served by the real
server: no console errors, every image loaded with alt text, Arabic laid out right
to left, links to the remote posts, and axe-core (npm, injected into the page)
finding no serious or critical accessibility violation.

CI (``.ci/run``) installs chromium and axe-core and sets THINGS_GATEWAY_BROWSER_TESTS=
required: there a missing browser fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Receipt
from gateway.outbox.store import Outbox
from gateway.runtime.web import WebServer
from tests.sitehelp import ARABIC, HOSTILE, jpeg_item, post, site_publisher
from tests.sitehelp import publish as archive
from tests.test_site import _server

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOT = ROOT / "docs" / "thing-page.png"
REQUIRED = os.environ.get("THINGS_GATEWAY_BROWSER_TESTS") == "required"


def _need(what: str, present: bool) -> None:
    if present:
        return
    if REQUIRED:
        pytest.fail(f"{what} is missing but THINGS_GATEWAY_BROWSER_TESTS=required (.ci/run)")
    pytest.skip(f"{what} is not installed (apt-get install chromium; see .ci/run)")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need("chromium", CHROMIUM is not None)
    _need("axe-core (npm install --prefix .ci/node axe-core)", AXE.exists())
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


POOL_TEXTS = [
    "Good morning! The pool opens at 7:00. Water 24.5 °C, air 18 °C. #swim #poolcam",
    "Lane swimming until noon; the camera sees 3 swimmers. https://pool.example/timetable",
    ARABIC,
    "Water 25.1 °C, air 22 °C, sunny. Perfect afternoon for a swim. #poolcam",
    f"Sensor says {HOSTILE} (values are data, never markup)",
    "Evening: water 24.8 °C, the pool closes at 21:00. See you tomorrow! #poolcam",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    tmp = tmp_path_factory.mktemp("browser")
    folder = tmp / "state" / "posts"
    pub = site_publisher(folder, per_page=20)
    outbox = Outbox(tmp / "state" / "gateway.db")
    for n, text in enumerate(POOL_TEXTS):
        media = (jpeg_item(tmp, n),) if n % 2 == 0 else ()
        p = post(n, text, media, lang="ar" if text == ARABIC else "en")
        archive(pub, p)
        outbox.add(p, {"archive": text, "mastodon": text})
        delivery = outbox.next_delivery("mastodon")
        assert delivery is not None
        outbox.mark_sent(delivery, Receipt(f"1{n}", f"https://mastodon.example/@pool/1{n}"))
    outbox.close()
    server = _server(tmp / "state")
    yield server
    server.stop()


def _open(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 420, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    response = page.goto(url, wait_until="load")
    assert response is not None
    assert response.status == 200
    return page, errors


def _check(page: Any, errors: list[str]) -> None:
    images = page.evaluate(
        "() => Array.from(document.images).map(i =>"
        " ({src: i.src, ok: i.complete && i.naturalWidth > 0, alt: i.alt.trim()}))"
    )
    for image in images:
        assert image["ok"], image
        assert image["alt"], image
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        "async () => (await axe.run()).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, bad
    assert not errors, errors
    # nothing the page shows ran as script
    assert page.evaluate("() => window.__pwned === undefined")


def test_timeline_in_chromium(browser: Any, served: WebServer) -> None:
    page, errors = _open(browser, served.url)
    assert page.locator("article").count() == len(POOL_TEXTS)
    assert page.locator("img").count() == 3
    hostile = page.locator("article", has_text="values are data")
    assert HOSTILE in hostile.inner_text()  # shown as text
    arabic = page.locator("article[lang=ar] p").first
    assert arabic.evaluate("e => getComputedStyle(e).direction") == "rtl"
    english = page.locator("article[lang=en] p").first
    assert english.evaluate("e => getComputedStyle(e).direction") == "ltr"
    assert page.locator('a[href="https://pool.example/timetable"]').count() == 1
    _check(page, errors)
    if os.environ.get("THINGS_GATEWAY_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.set_viewport_size({"width": 480, "height": 1100})
        page.screenshot(path=str(SCREENSHOT))
    page.close()


def test_permalink_in_chromium_links_the_remote_posts(browser: Any, served: WebServer) -> None:
    page, errors = _open(browser, served.url + "posts/post00002.html")
    assert page.evaluate("() => document.documentElement.lang") == "ar"
    direction = page.locator("article p").first.evaluate("e => getComputedStyle(e).direction")
    assert direction == "rtl"
    remote = page.locator('a[href="https://mastodon.example/@pool/12"]')
    assert remote.inner_text() == "on mastodon"
    _check(page, errors)
    page.close()


def test_status_and_kiosk_in_chromium(browser: Any, served: WebServer) -> None:
    page, errors = _open(browser, served.url + "status")
    assert "pool" in page.locator("h1").inner_text()
    assert page.locator("th", has_text="water").count() == 1
    _check(page, errors)
    page.close()
    page, errors = _open(browser, served.url + "kiosk")
    assert page.locator("img").count() == 1
    box = page.locator("img").bounding_box()
    assert box["width"] >= 400  # full width of the 420-pixel screen
    _check(page, errors)
    page.close()
