"""The thing's own page: a static site built from the archive (``site = true`` on a ``file``
publisher).

Files, beside ``posts.jsonl`` in the archive folder (every link relative, so the folder
works from ``file://`` and from any static web server)::

    index.html          the newest ``per_page`` posts, newest first
    page/<n>.html       full pages, oldest first numbering; written once, never again
    posts/<id>.html     one permalink page per post
    feed.xml            Atom 1.0, the newest posts, media as enclosures
    feed.json           JSON Feed 1.1, media as attachments
    style.css           phone-readable, dark scheme via prefers-color-scheme
    site.json           the builder's own state: post count and the newest records

Adding one post touches a fixed number of files whatever the archive's size: its
permalink, the index, both feeds, ``site.json`` and, when a page just filled, that page.
Each is written to a temp file and renamed over the old one.  The archive stays the
source of truth: when ``site.json`` is missing or disagrees with it, the site is
rebuilt from the archive once.

No JavaScript: every value is escaped (sensor values and asker texts are data).
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

STATE_NAME = "site.json"
FEED_SIZE = 20
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
_TAG = re.compile(r"(?<![\w&#/])#(\w{1,100})")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")

STYLE = """\
:root { color-scheme: light dark; --bg: #fff; --fg: #1b1b1f; --muted: #5b5b66;
  --card: #f4f4f7; --link: #0b57d0; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #121216; --fg: #ececf1; --muted: #a8a8b3; --card: #1e1e25; --link: #8ab4f8; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 40rem; padding: 1rem; background: var(--bg);
  color: var(--fg); font: 1rem/1.5 system-ui, sans-serif; }
a { color: var(--link); }
header h1 { font-size: 1.4rem; margin: 0 0 1rem; }
article { background: var(--card); border-radius: .75rem; padding: .75rem 1rem;
  margin: 0 0 1rem; }
article p { margin: .25rem 0 .5rem; white-space: pre-wrap; overflow-wrap: anywhere; }
article img, article video { display: block; width: 100%; height: auto;
  border-radius: .5rem; margin: .5rem 0; }
.meta { color: var(--muted); font-size: .875rem; }
nav { display: flex; justify-content: space-between; margin: 1rem 0; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def safe_name(post_id: str) -> str:
    """The permalink file name of a post id (no path separators, no dots leading)."""
    return _SAFE_ID.sub("_", post_id).lstrip(".") or "_"


def linkify(text: str) -> str:
    """Escaped ``text`` with http(s) links and ``#hashtags`` as links."""
    out: list[str] = []
    last = 0
    for match in _URL.finditer(text):
        out.append(_tags(text[last : match.start()]))
        url = match.group(0)
        out.append(f'<a href="{_esc(url)}" rel="nofollow noopener">{_esc(url)}</a>')
        last = match.end()
    out.append(_tags(text[last:]))
    return "".join(out)


def _tags(text: str) -> str:
    escaped: list[str] = []
    last = 0
    for match in _TAG.finditer(text):
        escaped.append(_esc(text[last : match.start()]))
        tag = match.group(1)
        # No tag pages on a static site: a hashtag searches the feed readers' way, by text.
        escaped.append(f'<a class="tag" href="#tag-{quote(tag)}">#{_esc(tag)}</a>')
        last = match.end()
    escaped.append(_esc(text[last:]))
    return "".join(escaped)


def _local_time(created_at: str) -> str:
    try:
        return datetime.fromisoformat(created_at).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created_at


def _lang(record: dict[str, Any]) -> str:
    lang = record.get("lang")
    return (
        lang if isinstance(lang, str) and re.fullmatch(r"[A-Za-z]{2,8}(-[\w]{1,8})*", lang) else ""
    )


def _media_html(item: dict[str, Any], prefix: str) -> str:
    src = _esc(prefix + quote(str(item.get("file", ""))))
    mime = str(item.get("mime", ""))
    alt = _esc(item.get("alt") or "")
    size = ""
    if isinstance(item.get("width"), int) and isinstance(item.get("height"), int):
        size = f' width="{item["width"]}" height="{item["height"]}"'
    if mime.startswith("video/"):
        poster = item.get("poster")
        shown = f' poster="{_esc(prefix + quote(poster))}"' if isinstance(poster, str) else ""
        return (
            f'<video src="{src}"{size}{shown} autoplay muted loop playsinline controls'
            f' aria-label="{alt}"></video>'
        )
    return f'<img src="{src}" alt="{alt}"{size} loading="lazy">'


def post_html(
    record: dict[str, Any], prefix: str, links: dict[str, str] | None = None, *, heading: str = "h2"
) -> str:
    """One post as an ``<article>``; ``prefix`` leads from the page to the archive folder;
    ``links`` (default: the record's own, see :meth:`SiteBuilder.add_link`) lead to the
    same post on other services."""
    if links is None:
        links = record.get("links")
    lang = _lang(record)
    lang_attr = f' lang="{_esc(lang)}"' if lang else ""
    parts = record.get("thread") or [record.get("text", "")]
    texts = "".join(f'<p dir="auto">{linkify(str(part))}</p>' for part in parts)
    media = "".join(
        _media_html(m, prefix) for m in record.get("media") or [] if isinstance(m, dict)
    )
    created = str(record.get("created_at", ""))
    permalink = f"{prefix}posts/{quote(safe_name(str(record['id'])))}.html"
    remote = "".join(
        f' · <a href="{_esc(url)}" rel="nofollow noopener">on {_esc(name)}</a>'
        for name, url in sorted((links or {}).items())
        if url.startswith(("https://", "http://"))
    )
    return (
        f'<article{lang_attr} dir="auto" id="post-{_esc(safe_name(str(record["id"])))}">'
        f"{texts}{media}"
        f'<div class="meta" dir="ltr"><a href="{_esc(permalink)}"><time datetime="{_esc(created)}">'
        f"{_esc(_local_time(created))}</time></a> · {_esc(record.get('rule', ''))}{remote}</div>"
        "</article>"
    )


def page_html(title: str, body: str, prefix: str, *, lang: str = "en", extra_head: str = "") -> str:
    """A whole page around ``body``."""
    return (
        f'<!DOCTYPE html>\n<html lang="{_esc(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_esc(title)}</title>"
        f'<link rel="stylesheet" href="{prefix}style.css">'
        f'<link rel="alternate" type="application/atom+xml" href="{prefix}feed.xml" title="Atom">'
        f'<link rel="alternate" type="application/feed+json" href="{prefix}feed.json"'
        f' title="JSON Feed">{extra_head}</head>'
        f"<body><main>{body}</main></body></html>\n"
    )


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` through a temp file and a rename: readers see old or new, whole."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SiteBuilder:
    """Keeps the static site of one archive folder up to date, one post at a time."""

    def __init__(self, folder: Path, *, title: str, per_page: int = 20, base_url: str = "") -> None:
        self.folder = folder
        self.title = title
        self.per_page = per_page
        self.base_url = base_url.rstrip("/") + "/" if base_url else ""
        self._count = 0
        self._recent: list[dict[str, Any]] = []  # oldest first
        self._loaded = False
        self._lock = threading.Lock()
        """The file publisher's worker adds posts, other workers add their links."""

    @property
    def keep(self) -> int:
        """How many of the newest records ``site.json`` holds."""
        return max(self.per_page, FEED_SIZE)

    def sync(self, records: Sequence[dict[str, Any]]) -> None:
        """Load the state; rebuild everything from ``records`` when it disagrees with them."""
        state = self._read_state()
        last_id = records[-1]["id"] if records else None
        if (
            state is not None
            and state.get("count") == len(records)
            and state.get("per_page") == self.per_page
            and (state["recent"][-1]["id"] if state.get("recent") else None) == last_id
        ):
            self._count, self._recent = int(state["count"]), list(state["recent"])
            self._loaded = True
            return
        self.rebuild(records)

    def rebuild(self, records: Sequence[dict[str, Any]]) -> None:
        """Write every page from scratch (first start, or a lost ``site.json``)."""
        links = {r["id"]: r["links"] for r in self._recent if r.get("links")}
        records = [{**r, "links": links[r["id"]]} if r.get("id") in links else r for r in records]
        self._prepare()
        for n in range(len(records) // self.per_page):
            chunk = records[n * self.per_page : (n + 1) * self.per_page]
            self._write_full_page(n + 1, chunk)
        for record in records:
            self._write_permalink(record)
        self._count = len(records)
        self._recent = list(records[-self.keep :])
        self._loaded = True
        self._write_front()

    def add(self, record: dict[str, Any]) -> None:
        """One more post (already appended to the archive): O(1) files rewritten."""
        with self._lock:
            self._add(record)

    def add_link(self, post_id: str, service: str, url: str) -> bool:
        """The post reached ``service`` at ``url``: its permalink, the index and the
        feeds link it there (a full older page, written once, does not change).
        False when the post is not among the newest the site keeps."""
        if not url.startswith(("https://", "http://")):
            return False
        with self._lock:
            for record in reversed(self._recent):
                if record.get("id") == post_id:
                    links = dict(record.get("links") or {})
                    links[service] = url
                    record["links"] = links
                    self._write_permalink(record)
                    self._write_front()
                    return True
        return False

    def _add(self, record: dict[str, Any]) -> None:
        if not self._loaded:
            self._prepare()
            self._loaded = True
        self._write_permalink(record)
        self._count += 1
        self._recent = [*self._recent, record][-self.keep :]
        if self._count % self.per_page == 0:
            self._write_full_page(self._count // self.per_page, self._recent[-self.per_page :])
        self._write_front()

    # -- files ------------------------------------------------------------------

    def _prepare(self) -> None:
        for sub in ("", "posts", "page"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "style.css", STYLE)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("recent"), list) else None

    def _write_permalink(self, record: dict[str, Any]) -> None:
        body = (
            f'<header><h1><a href="../index.html">{_esc(self.title)}</a></h1></header>'
            + post_html(record, "../")
        )
        name = safe_name(str(record["id"]))
        lang = _lang(record) or "en"
        write_atomic(
            self.folder / "posts" / f"{name}.html", page_html(self.title, body, "../", lang=lang)
        )

    def _write_full_page(self, number: int, chunk: Sequence[dict[str, Any]]) -> None:
        older = f'<a href="{number - 1}.html">Older posts</a>' if number > 1 else "<span></span>"
        nav = f'<nav><a href="../index.html">Newest posts</a>{older}</nav>'
        posts = "".join(post_html(r, "../") for r in reversed(chunk))
        body = (
            f'<header><h1><a href="../index.html">{_esc(self.title)}</a>'
            f" · page {number}</h1></header>{posts}{nav}"
        )
        write_atomic(self.folder / "page" / f"{number}.html", page_html(self.title, body, "../"))

    def _write_front(self) -> None:
        newest = self._recent[-self.per_page :]
        # the full page holding the newest post not on the index
        shown_from = self._count - len(newest)
        older_page = (shown_from - 1) // self.per_page + 1 if shown_from else 0
        nav = (
            f'<nav><span></span><a href="page/{older_page}.html">Older posts</a></nav>'
            if older_page
            else ""
        )
        posts = "".join(post_html(r, "") for r in reversed(newest)) or "<p>No posts yet.</p>"
        body = f"<header><h1>{_esc(self.title)}</h1></header>{posts}{nav}"
        write_atomic(self.folder / "index.html", page_html(self.title, body, ""))
        feed = list(reversed(self._recent[-FEED_SIZE:]))
        write_atomic(self.folder / "feed.xml", atom_feed(self.title, feed, self.base_url))
        write_atomic(self.folder / "feed.json", json_feed(self.title, feed, self.base_url))
        state = {"count": self._count, "per_page": self.per_page, "recent": self._recent}
        write_atomic(self.folder / STATE_NAME, json.dumps(state, ensure_ascii=False))


def _permalink(record: dict[str, Any], base: str) -> str:
    return f"{base}posts/{quote(safe_name(str(record['id'])))}.html"


def _xml(value: object) -> str:
    # XML 1.0 forbids most control characters even escaped: drop them.
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", str(value))
    return html.escape(text, quote=True)


def atom_feed(title: str, records: Iterable[dict[str, Any]], base: str = "") -> str:
    """Atom 1.0 of ``records`` (newest first); media as ``rel="enclosure"`` links."""
    records = list(records)
    updated = records[0]["created_at"] if records else "1970-01-01T00:00:00+00:00"
    entries = []
    for r in records:
        links = "".join(
            f'<link rel="enclosure" href="{_xml(base + quote(str(m.get("file", ""))))}"'
            f' type="{_xml(m.get("mime", ""))}" length="{int(m.get("bytes") or 0)}"/>'
            for m in r.get("media") or []
            if isinstance(m, dict)
        )
        text = str(r.get("text", ""))
        lang = _lang(r)
        lang_attr = f' xml:lang="{_xml(lang)}"' if lang else ""
        content = post_html(r, base)
        entries.append(
            f"<entry{lang_attr}><id>urn:things-gateway:post:{_xml(r['id'])}</id>"
            f"<title>{_xml(text[:80])}</title><updated>{_xml(r['created_at'])}</updated>"
            f"<published>{_xml(r['created_at'])}</published>"
            f'<link rel="alternate" type="text/html" href="{_xml(_permalink(r, base))}"/>{links}'
            f'<content type="html">{_xml(content)}</content></entry>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>urn:things-gateway:feed:{_xml(quote(title))}</id><title>{_xml(title)}</title>"
        f"<updated>{_xml(updated)}</updated><author><name>{_xml(title)}</name></author>"
        f'<link rel="self" href="{_xml(base)}feed.xml"/>'
        f'<link rel="alternate" type="text/html" href="{_xml(base)}index.html"/>'
        f"{''.join(entries)}</feed>\n"
    )


def json_feed(title: str, records: Iterable[dict[str, Any]], base: str = "") -> str:
    """JSON Feed 1.1 of ``records`` (newest first); media as attachments."""
    items = []
    for r in records:
        item: dict[str, Any] = {
            "id": str(r["id"]),
            "url": _permalink(r, base),
            "content_text": "\n\n".join(str(p) for p in (r.get("thread") or [r.get("text", "")])),
            "content_html": post_html(r, base),
            "date_published": r["created_at"],
        }
        if _lang(r):
            item["language"] = _lang(r)
        attachments = [
            {
                "url": base + quote(str(m.get("file", ""))),
                "mime_type": str(m.get("mime", "application/octet-stream")),
                "size_in_bytes": int(m.get("bytes") or 0),
            }
            for m in r.get("media") or []
            if isinstance(m, dict)
        ]
        if attachments:
            item["attachments"] = attachments
        images = [m for m in r.get("media") or [] if str(m.get("mime", "")).startswith("image/")]
        if images:
            item["image"] = base + quote(str(images[0].get("file", "")))
        items.append(item)
    feed: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": title,
        "items": items,
    }
    if base:
        feed["home_page_url"] = base + "index.html"
        feed["feed_url"] = base + "feed.json"
    return json.dumps(feed, ensure_ascii=False, indent=1)


__all__ = ["SiteBuilder", "atom_feed", "json_feed", "linkify", "post_html", "safe_name"]
