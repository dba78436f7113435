"""Plain text from the HTML of feeds and APIs, and the `site` of a URL. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import urlsplit

_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
# Elements whose content is not text a reader sees.
_HIDDEN = frozenset({"script", "style", "template", "noscript", "iframe", "object", "svg", "head"})
_BREAKS = frozenset({"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def strip_html(markup: str | None) -> str:
    """Visible text of an HTML fragment: tags dropped, entities decoded, whitespace tidied, paragraphs kept."""
    if not markup:
        return ""
    if "<" not in markup and "&" not in markup:
        text = markup
    else:
        parser = _TextExtractor()
        parser.feed(markup)
        parser.close()
        text = "".join(parser.parts)  # character references were decoded by the parser
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def site_of(url: str | None) -> str | None:
    """'https://www.Blog.example.com:8443/x' → 'blog.example.com'."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def clip(text: str | None, limit: int) -> str | None:
    """At most `limit` characters, cut at a word boundary with an ellipsis when it had to be cut."""
    if text is None or len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


MAX_LINKS = 256
MAX_LINK_CHARS = 2048
# Anchors that are not links to a web page: Mastodon marks @mentions and #hashtags with these classes.
_NOT_PAGE_CLASSES = frozenset({"mention", "hashtag", "u-url"})


class _LinkExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        values = dict(attrs)
        classes = set((values.get("class") or "").split())
        if classes & _NOT_PAGE_CLASSES or "tag" in (values.get("rel") or "").split():
            return
        href = values.get("href")
        if href:
            self.links.append(href.strip())


def clean_links(urls: Iterable[object]) -> list[str]:
    """The http(s) URLs among `urls`, each once, in order; at most MAX_LINKS of at most MAX_LINK_CHARS."""
    kept: dict[str, None] = {}
    for url in urls:
        if isinstance(url, str) and url.startswith(("http://", "https://")) and len(url) <= MAX_LINK_CHARS:
            kept.setdefault(url, None)
            if len(kept) >= MAX_LINKS:
                break
    return list(kept)


def links_in_html(markup: str | None) -> list[str]:
    """The page links (`<a href>`) of an HTML fragment, @mention and #hashtag anchors left out."""
    if not markup or "<a" not in markup.lower():
        return []
    parser = _LinkExtractor()
    parser.feed(markup)
    parser.close()
    return clean_links(parser.links)
