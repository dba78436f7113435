"""RSS and Atom feeds (blogs, news, forums, alert feeds): `{type: rss, url, interval: 300}`.

Each poll is a conditional GET (If-None-Match / If-Modified-Since from the checkpoint). The raw bytes must pass
a defusedxml check before feedparser sees them: entity declarations (billion laughs, quadratic blow-up), external
references (XXE) and internal DTD subsets are refused at the first declaration, without expanding or fetching
anything. Entries become mentions with a stable id; the checkpoint keeps a window of ids already sent.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from html.entities import name2codepoint
from typing import Any, ClassVar
from xml.etree.ElementTree import ParseError

import feedparser
from defusedxml import DefusedXmlException, DTDForbidden
from defusedxml.ElementTree import DefusedXMLParser
from pydantic import Field, HttpUrl

from schemas.models import MAX_TEXT_CHARS
from services.ingest.connectors.base import Batch, Candidate, ContentRefused, SourceOptions, derived_id, sha1
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import SafeFetcher
from services.ingest.connectors.text import clean_links, clip, links_in_html, site_of, strip_html

logger = logging.getLogger(__name__)

ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1"
MAX_URL_CHARS = 2048
MAX_TITLE_CHARS = 4096
_LANG = re.compile(r"^([A-Za-z]{2})(?:[-_].*)?$")
# HTML named entities (&nbsp; &eacute; …) are common in real feeds but undefined in XML without a DTD.
_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
_XML_ENTITIES = frozenset({b"amp", b"lt", b"gt", b"quot", b"apos"})


class RssOptions(SourceOptions):
    type: str = "rss"
    url: HttpUrl
    # Ids of sent entries kept in the checkpoint (at least twice the feed's length is kept anyway).
    seen_window: int = Field(1000, ge=10, le=100_000)


class _FeedCheckParser(DefusedXMLParser):
    """defusedxml with entities and external references forbidden; a DOCTYPE only without an internal subset.

    RSS 0.91 feeds start with the Netscape `<!DOCTYPE rss PUBLIC … "…rss-0.91.dtd">`: a bare external id that
    nothing fetches and that declares nothing. Anything with `[…]` can declare entities and is refused, and so is
    a system id that is not an http(s) URL (`file:///etc/passwd`).
    """

    def __init__(self) -> None:
        super().__init__(forbid_dtd=True, forbid_entities=True, forbid_external=True)

    def defused_start_doctype_decl(
        self, name: str, sysid: str | None, pubid: str | None, has_internal_subset: bool
    ) -> None:
        if has_internal_subset or (sysid and not sysid.lower().startswith(("http://", "https://"))):
            raise DTDForbidden(name, sysid, pubid)


def html_entities_as_xml(raw: bytes) -> bytes:
    """`&nbsp;` → `&#160;` for every HTML named entity, so a feed that uses them is well-formed XML."""

    def replace(match: re.Match[bytes]) -> bytes:
        name = match.group(1)
        if name in _XML_ENTITIES:
            return match.group(0)
        codepoint = name2codepoint.get(name.decode("ascii"))
        return b"&#%d;" % codepoint if codepoint is not None else match.group(0)

    return _NAMED_ENTITY.sub(replace, raw) if b"&" in raw else raw


def check_xml(raw: bytes) -> None:
    """ContentRefused('unsafe_xml') for DTD subsets, entity declarations or external references;
    ContentRefused('malformed') for bytes that are not well-formed XML. Nothing is expanded or fetched."""
    parser = _FeedCheckParser()
    try:
        parser.feed(raw)
        parser.close()
    except DefusedXmlException as exc:
        raise ContentRefused("unsafe_xml", f"unsafe XML refused ({type(exc).__name__}: {exc})") from None
    except ParseError as exc:
        raise ContentRefused("malformed", f"not well-formed XML: {exc}") from None


def parse_feed(raw: bytes, url: str, content_type: str | None = None) -> Any:
    """Checked bytes → feedparser's result; ContentRefused when unsafe, malformed or not a feed at all."""
    raw = html_entities_as_xml(raw)
    check_xml(raw)
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # A stream, never a string: feedparser would treat a string as a URL or a file name to open.
    parsed = feedparser.parse(io.BytesIO(raw), response_headers=headers)
    if not parsed.get("version") and not parsed.entries:
        problem = parsed.get("bozo_exception")
        raise ContentRefused("malformed", f"not an RSS or Atom feed{f' ({problem})' if problem else ''}")
    return parsed


def _timestamp(entry: Mapping[str, Any]) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                year, month, day, hour, minute, second = value[:6]
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except (TypeError, ValueError):
                continue
    return None


def _content(entry: Mapping[str, Any]) -> str:
    contents = entry.get("content") or []
    best = max((c.get("value") or "" for c in contents), key=len, default="")
    summary = entry.get("summary") or ""
    return best if len(strip_html(best)) >= len(strip_html(summary)) else summary


def _entry_links(entry: Mapping[str, Any], own_url: str | None) -> list[str]:
    """The pages an entry links to: the anchors of its content and summary, and its `links` other than itself."""
    markup = [c.get("value") or "" for c in entry.get("content") or []] + [entry.get("summary") or ""]
    anchors = [url for part in markup for url in links_in_html(part)]
    related = [
        link.get("href")
        for link in entry.get("links") or []
        if isinstance(link, Mapping) and link.get("rel") in ("related", "via")
    ]
    return [url for url in clean_links([*anchors, *related]) if url != own_url]


def _lang(value: Any) -> str | None:
    match = _LANG.match(value) if isinstance(value, str) else None
    return match.group(1).lower() if match else None


def entry_key(entry: Mapping[str, Any], feed_url: str) -> str | None:
    """What makes an entry itself: its guid (scoped to the feed unless it is a URL/URN), else its link, else
    its title and content. None when it has none of these."""
    guid = (entry.get("id") or "").strip()
    if guid:
        return guid if ":" in guid else f"{feed_url}#{guid}"
    link = (entry.get("link") or "").strip()
    if link:
        return link
    title = (entry.get("title") or "").strip()
    body = _content(entry).strip()
    if title or body:
        return f"{feed_url}#{title}\n{body}"
    return None


def entry_fields(entry: Mapping[str, Any], feed_url: str, feed_lang: str | None, now: datetime) -> Candidate:
    """One feed entry → mention/1 fields (the runner validates them)."""
    key = entry_key(entry, feed_url)
    ref = str(entry.get("id") or entry.get("link") or entry.get("title") or "?")[:200]
    if key is None:
        return Candidate(ref, None, "entry has no guid, link, title or content")
    link = (entry.get("link") or "").strip()
    url = link if link.startswith(("http://", "https://")) and len(link) <= MAX_URL_CHARS else None
    title = clip(strip_html(entry.get("title")) or None, MAX_TITLE_CHARS)
    text = clip(strip_html(_content(entry)) or title or "", MAX_TEXT_CHARS)
    detail = entry.get("author_detail") or {}
    author_name = strip_html(detail.get("name") or entry.get("author")) or None
    site = site_of(url or feed_url)
    author: dict[str, Any] = {}
    if author_name:
        author = {
            "id": f"rss:{site}:{author_name.lower()}"[:2048],
            "name": author_name[:2048],
            "url": detail.get("href") if str(detail.get("href") or "").startswith(("http://", "https://")) else None,
        }
    fields: dict[str, Any] = {
        "id": f"rss:{sha1(key)}",
        "source": "rss",
        "url": url,
        "site": site,
        "published_at": _timestamp(entry) or now,
        "fetched_at": now,
        "author": author,
        "title": title,
        "text": text,
        "lang": _lang(entry.get("language")) or feed_lang,
        "links": _entry_links(entry, url),
    }
    return Candidate(ref, fields)


class RssConnector:
    type: ClassVar[str] = "rss"

    def __init__(self, options: RssOptions) -> None:
        self.options = options
        self.url = str(options.url)
        self.source_id = options.id or derived_id("rss", self.url)
        self.interval = options.interval

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> RssConnector:
        return cls(RssOptions.model_validate(dict(raw)))

    def describe(self) -> str:
        return self.url

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        cursor = cursor or {}
        headers = {"accept": ACCEPT}
        if cursor.get("etag"):
            headers["if-none-match"] = str(cursor["etag"])
        if cursor.get("last_modified"):
            headers["if-modified-since"] = str(cursor["last_modified"])
        response = await fetcher.get(self.url, headers)
        if response.not_modified:
            logger.debug("%s: not modified", self.url)
            yield Batch([], cursor, save=False, notes={"not_modified": True})
            return
        feed = parse_feed(response.content, response.url, response.headers.get("content-type"))
        now = datetime.now(UTC)
        feed_lang = _lang(feed.feed.get("language"))
        seen: list[str] = [str(i) for i in cursor.get("seen") or []]
        already = set(seen)
        fresh: list[Candidate] = []
        current: list[str] = []
        for entry in feed.entries:
            candidate = entry_fields(entry, self.url, feed_lang, now)
            mention_id = candidate.fields["id"] if candidate.fields else f"rss-invalid:{sha1(candidate.ref)}"
            current.append(mention_id)
            if mention_id in already:
                continue
            already.add(mention_id)
            seen.append(mention_id)
            fresh.append(candidate)
        window = max(self.options.seen_window, 2 * len(current))
        # The feed's current entries always stay in the window, whatever their order in it.
        keep = set(current)
        trimmed = [i for i in seen[:-window] if i in keep] + seen[-window:]
        new_cursor: Cursor = {
            "etag": response.headers.get("etag"),
            "last_modified": response.headers.get("last-modified"),
            "seen": trimmed,
        }
        changed = bool(fresh) or any(new_cursor.get(k) != cursor.get(k) for k in ("etag", "last_modified"))
        yield Batch(fresh, new_cursor, fetched=len(feed.entries), save=changed)
